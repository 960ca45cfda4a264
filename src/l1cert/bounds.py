"""Certified l1 radii from probability bounds: the table of docs/design.md ("The certificates")
as pure numpy functions.

Every function takes `pa` (a lower bound of P(f(x+ε) = c_A)) and the noise scale, is vectorised
over `pa` (and `pb`), and returns 0 wherever its validity condition fails (abstain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from l1cert.box import box_radius
from l1cert.names import check_choice
from l1cert.noise import NOISES, noise_class
from l1cert.utils import L1CertError


def _where(valid, radius_fn, *arrays):
    """radius_fn(*arrays) where valid, else 0, without evaluating it on invalid entries."""
    out = np.zeros(np.broadcast(*arrays).shape)
    arrays = [np.broadcast_to(a, out.shape) for a in arrays]
    valid = np.broadcast_to(valid, out.shape)
    out[valid] = radius_fn(*(a[valid] for a in arrays))
    return out[()] if out.ndim == 0 else out


def teng(pa, scale):
    """Theorem 2 (tight, binary): R = −λ·ln(2(1 − p̲A)) for p̲A > 1/2."""
    pa = np.asarray(pa, dtype=float)
    with np.errstate(divide="ignore"):
        return _where(pa > 0.5, lambda p: -scale * np.log(2.0 * (1.0 - p)), pa)


def lecuyer(pa, scale):
    """Lecuyer et al.'s DP bound with p̄B = 1 − p̲A: R = λ/2·ln(p̲A/(1 − p̲A)) for p̲A > 1/2."""
    pa = np.asarray(pa, dtype=float)
    with np.errstate(divide="ignore"):
        return _where(pa > 0.5, lambda p: scale / 2.0 * np.log(p / (1.0 - p)), pa)


def teng_multiclass(pa, pb, scale):
    """Theorem 1: R = max{λ/2·ln(p̲A/p̄B), −λ·ln(1 − p̲A + p̄B)} for p̲A > p̄B."""
    pa, pb = np.asarray(pa, dtype=float), np.asarray(pb, dtype=float)

    def radius(a, b):
        with np.errstate(divide="ignore"):
            return np.maximum(scale / 2.0 * np.log(a / b), -scale * np.log(1.0 - a + b))

    return _where(pa > pb, radius, pa, pb)


def cohen(pa, scale):
    """Cohen et al.'s l2 radius σ·Φ⁻¹(p̲A), an l1 certificate too since ‖δ‖₂ ≤ ‖δ‖₁."""
    from scipy.special import ndtri  # Φ⁻¹, as scipy.stats.norm.ppf without importing scipy.stats

    pa = np.asarray(pa, dtype=float)
    return _where(pa > 0.5, lambda p: scale * ndtri(p), pa)


def uniform(pa, scale):
    """Uniform noise U[−λ, λ] (Lee et al. 2019, Yang et al. 2020): R = 2λ·(p̲A − 1/2); the
    same for splitting noise (SSN, Levine & Feizi 2021) with its half-width λ."""
    pa = np.asarray(pa, dtype=float)
    return _where(pa > 0.5, lambda p: 2.0 * scale * (p - 0.5), pa)


def dssn(count_a, count_b, top, runner_up, grid: int):
    """DSSN's exact radius (docs/design.md, "Splitting noise") from the votes of the prediction
    A (class `top`) and of the class B that limits it (`runner_up`): ⌊(N_A − N_B − t)/2⌋/q,
    t = 1 where a tie would go to B (argmax takes the lower class).
    `l1cert.splitting.dssn_certify` finds B."""
    count_a, count_b = np.asarray(count_a), np.asarray(count_b)
    tie = (np.asarray(runner_up) < np.asarray(top)).astype(np.int64)
    return ((count_a - count_b - tie) // 2) / grid


def thm1_beats_dp(pa, pb) -> np.ndarray:
    """Remark 2: where Theorem 1's radius exceeds the DP bound λ/2·ln(p̲A/p̄B) (λ cancels).

    The DP bound with a free p̄B equals `lecuyer` at p̲A/(p̲A + p̄B), whose odds are p̲A/p̄B.
    """
    pa, pb = np.asarray(pa, dtype=float), np.asarray(pb, dtype=float)
    theorem1 = teng_multiclass(pa, pb, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dp = lecuyer(pa / (pa + pb), 1.0)
    return (pa > pb) & (theorem1 > dp * (1 + 1e-9) + 1e-12)  # 1 − p̲A/(p̲A + p̄B) rounds


@dataclass(frozen=True)
class Bound:
    """One certificate: how it turns probability bounds into a radius, and how it is shown.

    `radius(pa, scale)` (or `radius(pa, pb, scale)` when `uses_pb`) returns 0 where the bound
    abstains; `threshold(r, scale)` is its inverse, the smallest p̲A certifying radius r
    (docs/design.md, "Sequential certification"), None where it depends on p̄B too. `label`,
    `color`, `style` draw its curves, `caption` names it in the report's captions.
    """

    name: str
    radius: Callable
    threshold: Callable | None
    uses_pb: bool
    label: str
    color: str
    style: str
    caption: str
    panel: bool = True  # its own panel in the per-dataset figures
    # An exact bound's radius comes from the vote counts of all of its noise's copies:
    # radius(count_a, count_b, top, runner_up, result) with the sidecar's `result`, which
    # re-derives the radius that the noise's `exact_certificate` gave.
    exact: bool = False
    # A box bound's radius depends on the point too: radius(pa, pb, scale, points).
    needs_point: bool = False

    def valid(self, pa, pb=None) -> np.ndarray:
        """Where the bound's condition holds: p̲A > p̄B (uses_pb), else p̲A > 1/2."""
        pa = np.asarray(pa, dtype=float)
        return pa > np.asarray(pb) if self.uses_pb else pa > 0.5


def _ndtr(x):
    from scipy.special import ndtr  # Φ, without importing scipy.stats

    return ndtr(x)


# The bounds, in the order tables and legends list them. Which noise each holds for is the
# noise's to say (`Noise.bounds`), not repeated here.
BOUNDS: dict[str, Bound] = {
    b.name: b
    for b in (
        Bound(
            "teng", teng, lambda r, s: 1.0 - 0.5 * np.exp(-r / s), False,
            "Laplace, Thm 2 (teng)", "tab:red", "-",
            "the Laplace model certified with Theorem 2 (teng)",
        ),
        Bound(
            "lecuyer", lecuyer, lambda r, s: 1.0 / (1.0 + np.exp(-2.0 * r / s)), False,
            "Laplace, Lecuyer et al. (DP)", "tab:green", "--",
            "the same Laplace model with Lecuyer et al.'s bound",
        ),
        Bound(
            "teng_multiclass", teng_multiclass, None, True,
            "Laplace, Thm 1 (teng_multiclass)", "tab:orange", ":",
            "the Laplace model with Theorem 1 (teng_multiclass)", panel=False,
        ),
        Bound(
            "cohen", cohen, lambda r, s: _ndtr(r / s), False,
            "Gaussian, Cohen et al.", "tab:blue", "-",
            "the Gaussian model with Cohen et al.'s",
        ),
        Bound(
            "uniform", uniform, lambda r, s: 0.5 + r / (2.0 * s), False,
            "Uniform, Yang et al.", "tab:purple", "-",
            "the uniform model with Yang et al.'s",
        ),
        Bound(
            "ssn", uniform, lambda r, s: 0.5 + r / (2.0 * s), False,
            "Splitting (SSN), Levine & Feizi", "tab:brown", "-.",
            "the splitting-noise model with Levine and Feizi's SSN bound",
        ),
        Bound(
            "uniform_box", lambda pa, pb, s, points: box_radius(pa, pb, points, s), None, True,
            "Uniform, box (Voráček & Hein)", "tab:pink", "--",
            "the uniform model with Voráček and Hein's box-constrained bound (against "
            "perturbations that keep the input in [0, 1])", needs_point=True, panel=False,
        ),
        Bound(
            "ssn_box", lambda pa, pb, s, points: box_radius(pa, pb, points, s), None, True,
            "Splitting (SSN), box (Voráček & Hein)", "tab:olive", ":",
            "the splitting-noise model with the box-constrained bound (against perturbations "
            "that keep the input in [0, 1])", needs_point=True, panel=False,
        ),
        Bound(
            "dssn", lambda a, b, top, runner_up, result: dssn(a, b, top, runner_up,
                                                              result["grid"]),
            None, False,
            "DSSN (exact), Levine & Feizi", "black", "-",
            "the DSSN model, certified exactly (no sampling, no abstention) against "
            "perturbations that stay on the input grid", exact=True,
        ),
    )
}  # fmt: skip


def check_bound(bound: str, noise: str) -> Bound:
    """The registry entry of `bound`, or L1CertError if it is unknown or does not fit `noise`."""
    noise_class(noise)
    check_choice("bound", bound, tuple(BOUNDS))
    if bound not in NOISES[noise].bounds:
        fitting = ", ".join(NOISES[noise].bounds)
        raise L1CertError(
            f"bound {bound!r} holds for {owner(bound)} noise, not {noise} (use {fitting})"
        )
    return BOUNDS[bound]


def radius(bound: str, noise: str, scale: float, pa, pb=None, points=None):
    """The radius of `bound` for `noise` of the given scale; pb defaults to 1 − pa (binary);
    `points` (points, d): the inputs, which a box bound needs."""
    entry = check_bound(bound, noise)
    if entry.exact:
        raise L1CertError(
            f"bound {bound!r} is exact: its radius comes from vote counts over the noise's "
            "splits (l1cert certify), not from a probability bound"
        )
    if not entry.uses_pb:
        return entry.radius(pa, scale)
    if pb is None:
        pb = 1.0 - np.asarray(pa, dtype=float)
    if entry.needs_point:
        if points is None:
            raise L1CertError(f"bound {bound!r} needs the point itself (its pixels' room)")
        return entry.radius(pa, pb, scale, points)
    return entry.radius(pa, pb, scale)


def radius_per_bound(
    noise: str, sigma: float, pa: float, pb: float | None = None, bounds=()
) -> dict:
    """{bound: radius} for the given bounds (default: all that apply to `noise`)."""
    from l1cert.noise import make_noise

    smoothing_noise = make_noise(noise, sigma)
    for name, p in (("pa", pa), ("pb", pb)):
        if p is not None and not 0.0 <= p <= 1.0:
            raise L1CertError(f"--{name} is a probability in [0, 1], got {p}")
    if pb is not None and pa + pb > 1.0:
        raise L1CertError(f"--pa {pa} and --pb {pb} add up to more than 1")
    names = list(bounds) or list(smoothing_noise.bounds)
    for bound in names:
        check_bound(bound, noise)
    if pb is not None and not any(BOUNDS[b].uses_pb for b in names):
        raise L1CertError(f"--pb is used by teng_multiclass only, not by {', '.join(names)}")
    return {bound: float(radius(bound, noise, smoothing_noise.scale, pa, pb)) for bound in names}


def inverse_radius(bound: str, scale: float, r):
    """p*(r): the smallest p̲A that certifies radius r (> p* for r = 0; docs/design.md).

    Only for the single-class bounds; `teng_multiclass` depends on p̄B too and has no
    one-dimensional threshold.
    """
    entry = BOUNDS.get(bound)
    if entry is None or entry.threshold is None:
        raise L1CertError(f"bound {bound!r} has no single-class threshold")
    return entry.threshold(np.asarray(r, dtype=float), scale)[()]


def owner(bound: str) -> str:
    """The noise whose models `bound` certifies."""
    return next(name for name, cls in NOISES.items() if bound in cls.bounds)


def panel_methods() -> list[tuple[str, str]]:
    """(noise, bound) for every bound with a panel of its own in the per-dataset figures, in
    BOUNDS order."""
    return [(owner(name), name) for name, b in BOUNDS.items() if b.panel]


def curve_methods() -> list[tuple[str, str]]:
    """(noise, bound) for every bound with a radius formula in p̲A alone: Fig. 6's curves."""
    return [(owner(name), name) for name, b in BOUNDS.items() if b.threshold is not None]
