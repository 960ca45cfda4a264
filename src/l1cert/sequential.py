"""Sequential certification: stop drawing noise once a point's row of the table is decided.

Estimation draws come in growing rounds (`looks`). At look j the bounds are Clopper–Pearson at a
per-look level `alpha_j` with Σ_j alpha_j = alpha (Bonferroni over the fixed looks), so the lower
bounds hold at every look at once with probability ≥ 1 − alpha, and therefore at any stopping
time. Most of alpha is kept for the last look (`last_share`), where n = cap: there the bound loses
almost nothing against fixed-n CERTIFY, so a bucket that only the cap reaches (the Laplace top
bucket at σ = 0.12) is kept. `benchmarks/sequential_simulation.py` measured this against a
mixture confidence sequence and other splits; `benchmarks/sequential_replay.py` replays this
rule and its variants on the default experiment's own points.

The upper ends (p̄A, and a lower bound p_B of the runner-up) only decide when to stop, never
what is certified: if one is wrong, a point stops early with a still valid, smaller certificate.
They use their own level `upper_alpha` (spread over all looks but the last, where the point stops
anyway), which sets how often that can happen and so how far the table may drift. They are
carried to the cap: what matters is the bucket the cap could still reach, and of the cap's draws
those seen are already fixed.

A point stops when, for every bound of its noise, the radius from the lower ends and the radius
from the upper ends fall in the same bucket of the report's radii (below R_1, abstain included, is
a bucket), or at the last look. Report the radii of `bound_radii(...)` at the stopping look.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from l1cert import bounds
from l1cert.noise import noise_class
from l1cert.stats import lower_confidence_bound, upper_confidence_bound
from l1cert.utils import L1CertError

FIRST_LOOK = 100  # estimation draws of the first round; each later round doubles the total
LAST_SHARE = 0.9  # of alpha, kept for the last look (see the module docstring)
# Per point: the chance that a wrong upper end stops it early; larger saves draws but moves
# table cells (README, "Sampling", has the measurements behind 0.2).
UPPER_ALPHA = 0.2


def looks(cap: int, first: int = FIRST_LOOK, growth: float = 2.0) -> list[int]:
    """Cumulative estimation draws at each look: first·growth^k below cap, then cap itself."""
    if int(first) != first or first < 1:
        raise L1CertError(f"first look must be a positive integer, got {first}")
    if int(cap) != cap or cap < first:
        raise L1CertError(f"cap must be an integer >= the first look {first}, got {cap}")
    if not growth > 1:
        raise L1CertError(f"growth must be > 1, got {growth}")
    counts = []
    n = float(first)
    while round(n) < cap:
        if not counts or round(n) > counts[-1]:
            counts.append(int(round(n)))
        n *= growth
    return counts + [int(cap)]


def look_alphas(alpha: float, num_looks: int, last_share: float = LAST_SHARE) -> np.ndarray:
    """Per-look levels summing to alpha: last_share·alpha at the last look, the rest evenly
    before it (a single look gets all of alpha)."""
    if not 0 < alpha < 1:
        raise L1CertError(f"alpha must lie in (0, 1), got {alpha}")
    if not 0 < last_share <= 1:
        raise L1CertError(f"last_share must lie in (0, 1], got {last_share}")
    if num_looks == 1:
        return np.array([alpha])
    early = (1.0 - last_share) * alpha / (num_looks - 1)
    return np.array([early] * (num_looks - 1) + [last_share * alpha])


class Ends(NamedTuple):
    """The ends of the confidence intervals at one look, arrays over points.

    pa_lower: p̲A for the single-class bounds; pa_joint, pb_upper: the pair of
    teng_multiclass (hold together). The optimistic ends, for stopping only: pa_upper for the
    single-class bounds, pa_upper_joint and pb_lower for teng_multiclass.
    """

    pa_lower: np.ndarray
    pa_joint: np.ndarray
    pb_upper: np.ndarray
    pa_upper: np.ndarray
    pa_upper_joint: np.ndarray
    pb_lower: np.ndarray


def ends(
    count_a,
    count_b,
    look,
    looks_: list[int],
    alpha: float,
    num_classes: int,
    last_share: float = LAST_SHARE,
    upper_alpha: float = UPPER_ALPHA,
    project: bool = True,
) -> Ends:
    """The ends of the confidence intervals after looks_[look] draws (vectorised over points;
    `look` may be an array).

    With two classes p_B = 1 − p_A: teng_multiclass uses p̲A at the full level and p̄B = 1 − p̲A.
    With K > 2, as in fixed-n CERTIFY, α is split: p̲A at α/2 and each other class at
    α/(2(K − 1)), per look; p̄B is capped at 1 − p̲A.

    The optimistic ends bound what going on could still give: with `project`, they are the
    bounds the cap would give if its vote shares reached p̄A and p_B (a point whose p_A is
    below a threshold by less than the cap's own margin cannot cross it by drawing more).
    Those shares are predictions of the cap's (`_share_at_cap`): the votes seen are fixed,
    only the draws still to come vary.
    """
    look = np.asarray(look)
    n, cap, num_looks = np.asarray(looks_)[look], looks_[-1], len(looks_)
    alphas = look_alphas(alpha, num_looks, last_share)
    a, u = alphas[look], upper_alpha / max(num_looks - 1, 1)
    pa_lower = lower_confidence_bound(count_a, n, a)
    pa_upper = upper_confidence_bound(count_a, n, u)
    pb_lower = lower_confidence_bound(count_b, n, u) if num_classes > 2 else 1.0 - pa_upper
    pa_upper_joint = pa_upper
    if project:  # with two classes the cap's p_B follows from its p_A: share_b is not used
        share_a = _share_at_cap(count_a, pa_upper, n, cap)
        share_b = _share_at_cap(count_b, pb_lower, n, cap)
        pa_upper_joint, pb_lower = _lower_ends_at_cap(
            cap * share_a, cap * share_b, cap, alphas[-1], num_classes
        )
        pa_upper = lower_confidence_bound(cap * share_a, cap, alphas[-1])
    if num_classes <= 2:
        return Ends(pa_lower, pa_lower, 1.0 - pa_lower, pa_upper, pa_upper_joint, pb_lower)
    pa_joint, pb_upper = _joint(count_a, count_b, n, a, num_classes)
    return Ends(pa_lower, pa_joint, pb_upper, pa_upper, pa_upper_joint, pb_lower)


def _share_at_cap(count, end, n, cap):
    """The end of a confidence interval for a vote share after n draws, carried to the share at
    the cap: of its cap draws the n seen are fixed, so the spread of the cap's share around
    count/n is √((cap − n)/cap) times that of the share seen (Var = p(1 − p)(cap − n)/(n·cap))."""
    share = np.asarray(count) / n
    return share + (end - share) * np.sqrt((cap - n) / cap)


def _joint(count_a, count_b, n, a, num_classes):
    """p̲A at a/2 and p̄B at a/(2(K − 1)) (capped at 1 − p̲A): they hold together at level a."""
    pa_joint = lower_confidence_bound(count_a, n, a / 2)
    pb_upper = upper_confidence_bound(count_b, n, a / (2 * (num_classes - 1)))
    return pa_joint, np.minimum(pb_upper, 1.0 - pa_joint)


def _lower_ends_at_cap(count_a, count_b, cap, a, num_classes):
    """(p̲A, p̄B) that counts count_a, count_b (may be fractional) at the cap would give."""
    if num_classes <= 2:
        pa = lower_confidence_bound(count_a, cap, a)
        return pa, 1.0 - pa
    return _joint(count_a, count_b, cap, a, num_classes)


def radius_and_validity(bound: str, noise: str, scale: float, pa, pb, points=None):
    """The radius of `bound` and whether its condition holds (p̲A > 1/2, or p̲A > p̄B);
    `points` (points, d): the inputs, for the bounds that need them (the box bounds)."""
    entry = bounds.check_bound(bound, noise)
    return bounds.radius(bound, noise, scale, pa, pb, points), entry.valid(pa, pb)


def bucket(bound: str, noise: str, scale: float, pa, pb, radii, points=None) -> np.ndarray:
    """How many of the report's radii R_j the bound certifies (0: below R_1 or abstain)."""
    r, valid = radius_and_validity(bound, noise, scale, pa, pb, points)
    radii = np.asarray(radii, dtype=float)
    certified = valid[..., None] & (np.asarray(r)[..., None] >= radii)
    return certified.sum(axis=-1)


def bound_radii(b: Ends, noise: str, scale: float, points=None) -> dict[str, np.ndarray]:
    """{bound: radius} from the lower ends: what a point reports at its stopping look.

    teng_multiclass is given wherever p̲A > p̄B, also when p̲A ≤ 1/2 (Theorem 1).
    """
    return {
        name: radius_and_validity(name, noise, scale, *lower_ends(name, b), points)[0]
        for name in _bound_names(noise)
    }


def decided(b: Ends, noise: str, scale: float, radii, points=None) -> np.ndarray:
    """True where, for every bound of the noise, both ends of the bounds share a bucket."""
    done = np.ones(np.shape(b.pa_lower), dtype=bool)
    for name in _bound_names(noise):
        low = bucket(name, noise, scale, *lower_ends(name, b), radii, points)
        high = bucket(name, noise, scale, *_upper_ends(name, b), radii, points)
        done &= low == high
    return done


def step(
    count_a,
    count_b,
    look,
    looks_: list[int],
    alpha: float,
    num_classes: int,
    noise: str,
    scale: float,
    radii,
    points=None,
    **levels,
) -> tuple[Ends, np.ndarray]:
    """Bounds after looks_[look] draws and whether each point stops there (decided or at cap).

    count_a, count_b: votes for ĉA and the runner-up among the estimation draws so far
    (selection draws excluded); `look` may be an array (one per point); `points`: the inputs
    (points, d), for the bounds that need them. `levels`: last_share, upper_alpha, project of
    `ends`.
    """
    look = np.asarray(look)
    b = ends(count_a, count_b, look, looks_, alpha, num_classes, **levels)
    stop = decided(b, noise, scale, radii, points) | (look == len(looks_) - 1)
    return b, stop


def _bound_names(noise: str) -> tuple[str, ...]:
    return noise_class(noise).bounds


def lower_ends(name: str, b: Ends):
    if bounds.BOUNDS[name].uses_pb:
        return b.pa_joint, b.pb_upper
    return b.pa_lower, None


def _upper_ends(name: str, b: Ends):
    if bounds.BOUNDS[name].uses_pb:
        return b.pa_upper_joint, b.pb_lower
    return b.pa_upper, None
