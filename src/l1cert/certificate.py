"""What certifying one point found (`Certificate`), whichever way it was certified: the counts,
the probability bounds and the radius under each bound of the noise. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

ABSTAIN = -1


@dataclass(kw_only=True)
class Certificate:
    """What CERTIFY found for one input, and how.

    `prediction` is ABSTAIN (-1) when p̲A ≤ 1/2, where the noise's primary bound abstains,
    and ĉA (`top_class`) otherwise. `count`/`pa_lower`: the votes for ĉA among the `n`
    estimation draws and their lower bound (used by every single-class bound, 0 where
    p̲A ≤ 1/2). `count_b`: the votes for the runner-up; `pb_upper`: the upper bound used by
    `teng_multiclass`, whose radius stands wherever p̲A > p̄B (Theorem 1). `alpha` is the
    failure probability of the Clopper–Pearson bounds after `n0` selection draws; None means the
    counts are exact (every noisy copy enumerated, no selection draws), `pa_lower` = count/n.
    `bound_radii`: the radius under each bound of the noise, the primary one first.
    """

    prediction: int
    count: int
    pa_lower: float
    bound_radii: dict[str, float] = field(default_factory=dict)
    count_b: int = 0
    pb_upper: float = 1.0
    top_class: int = ABSTAIN
    n: int = 0
    n0: int = 0
    alpha: float | None = None
    runner_up: int = ABSTAIN  # exact certificates: the class that limits the radius

    @property
    def radius(self) -> float:
        """The radius of the primary bound (the first one in `bound_radii`)."""
        return next(iter(self.bound_radii.values()))

    @property
    def exact(self) -> bool:
        return self.alpha is None
