"""Certified l1 radii from probability bounds: the table of DESIGN.md §1 as pure numpy functions.

Every function takes `pa` (a lower bound of P(f(x+ε) = c_A)) and the noise scale, is vectorised
over `pa` (and `pb`), and returns 0 wherever its validity condition fails (abstain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.stats import norm

from l1cert.noise import NOISES
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
    pa = np.asarray(pa, dtype=float)
    return _where(pa > 0.5, lambda p: scale * norm.ppf(p), pa)


def uniform(pa, scale):
    """Uniform noise U[−λ, λ] (Lee et al. 2019, Yang et al. 2020): R = 2λ·(p̲A − 1/2)."""
    pa = np.asarray(pa, dtype=float)
    return _where(pa > 0.5, lambda p: 2.0 * scale * (p - 0.5), pa)


class Bound(NamedTuple):
    noise: str
    function: Callable
    uses_pb: bool  # needs an upper bound on the runner-up class


BOUNDS: dict[str, Bound] = {
    "teng": Bound("laplace", teng, False),
    "lecuyer": Bound("laplace", lecuyer, False),
    "teng_multiclass": Bound("laplace", teng_multiclass, True),
    "cohen": Bound("gaussian", cohen, False),
    "uniform": Bound("uniform", uniform, False),
}


def check_bound(bound: str, noise: str) -> Bound:
    """The registry entry of `bound`, or L1CertError if it is unknown or does not fit `noise`."""
    if noise not in NOISES:
        raise L1CertError(f"unknown noise {noise!r} (choose from {', '.join(NOISES)})")
    if bound not in BOUNDS:
        raise L1CertError(f"unknown bound {bound!r} (choose from {', '.join(BOUNDS)})")
    entry = BOUNDS[bound]
    if entry.noise != noise:
        fitting = ", ".join(NOISES[noise].bounds)
        raise L1CertError(
            f"bound {bound!r} holds for {entry.noise} noise, not {noise} (use {fitting})"
        )
    return entry


def radius(bound: str, noise: str, scale: float, pa, pb=None):
    """The radius of `bound` for `noise` of the given scale; pb defaults to 1 − pa (binary)."""
    entry = check_bound(bound, noise)
    if not entry.uses_pb:
        return entry.function(pa, scale)
    if pb is None:
        pb = 1.0 - np.asarray(pa, dtype=float)
    return entry.function(pa, pb, scale)


def radii(noise: str, sigma: float, pa: float, pb: float | None = None, bounds=()) -> dict:
    """{bound: radius} for the given bounds (default: all that apply to `noise`)."""
    from l1cert.noise import make_noise

    smoothing_noise = make_noise(noise, sigma)
    for name, p in (("pa", pa), ("pb", pb)):
        if p is not None and not 0.0 <= p <= 1.0:
            raise L1CertError(f"--{name} is a probability in [0, 1], got {p}")
    names = list(bounds) or list(smoothing_noise.bounds)
    for bound in names:
        check_bound(bound, noise)
    return {
        bound: float(radius(bound, noise, smoothing_noise.scale, pa, pb)) for bound in names
    }


def inverse_radius(bound: str, scale: float, r):
    """p*(r): the smallest p̲A that certifies radius r (> p* for r = 0), DESIGN.md §5.

    Only for the single-class bounds; `teng_multiclass` depends on p̄B too and has no
    one-dimensional threshold.
    """
    r = np.asarray(r, dtype=float)
    thresholds = {
        "teng": lambda: 1.0 - 0.5 * np.exp(-r / scale),
        "lecuyer": lambda: 1.0 / (1.0 + np.exp(-2.0 * r / scale)),
        "cohen": lambda: norm.cdf(r / scale),
        "uniform": lambda: 0.5 + r / (2.0 * scale),
    }
    if bound not in thresholds:
        raise L1CertError(f"bound {bound!r} has no single-class threshold")
    return thresholds[bound]()[()]
