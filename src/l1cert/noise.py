"""The smoothing noises, one class each, matched by their per-coordinate standard deviation σ.

Each class knows its scale (the parameter of its distribution), draws samples in place on the
tensor's device from a `torch.Generator`, and names the certificates that apply to it
(`l1cert.certificates`), the first one being the primary bound reported in the `radius` column.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from l1cert.utils import L1CertError


class Noise:
    """Additive iid noise with per-coordinate standard deviation `sigma`."""

    name: ClassVar[str]
    bounds: ClassVar[tuple[str, ...]]  # certificates that apply; the first is the primary one

    def __init__(self, sigma: float):
        sigma = float(sigma)
        if not sigma > 0 or not math.isfinite(sigma):
            raise L1CertError(f"sigma must be a positive number, got {sigma}")
        self.sigma = sigma

    @property
    def scale(self) -> float:
        raise NotImplementedError

    @property
    def primary_bound(self) -> str:
        return self.bounds[0]

    def sample_(self, out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fill `out` with noise, in place, and return it."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(sigma={self.sigma:g}, scale={self.scale:g})"


class Gaussian(Noise):
    """N(0, σ²) per coordinate (Cohen et al. 2019)."""

    name = "gaussian"
    bounds = ("cohen",)

    @property
    def scale(self) -> float:
        return self.sigma

    def sample_(self, out, generator=None):
        return out.normal_(0.0, self.scale, generator=generator)


class Laplace(Noise):
    """Laplace(0, λ) per coordinate, λ = σ/√2 (variance 2λ²)."""

    name = "laplace"
    bounds = ("teng", "lecuyer", "teng_multiclass")

    @property
    def scale(self) -> float:
        return self.sigma / math.sqrt(2.0)

    def sample_(self, out, generator=None):
        # Inverse CDF: u ~ U(-1, 1) gives -λ·sign(u)·ln|u| ~ Laplace(0, λ).
        out.uniform_(-1.0, 1.0, generator=generator)
        sign = out.sign()
        tiny = torch.finfo(out.dtype).tiny  # u = 0 has probability ~2^-24; keep it finite
        return out.abs_().clamp_min_(tiny).log_().mul_(sign).mul_(-self.scale)


class Uniform(Noise):
    """U[-λ, λ] per coordinate, λ = √3·σ (Lee et al. 2019, Yang et al. 2020)."""

    name = "uniform"
    bounds = ("uniform",)

    @property
    def scale(self) -> float:
        return math.sqrt(3.0) * self.sigma

    def sample_(self, out, generator=None):
        return out.uniform_(-self.scale, self.scale, generator=generator)


NOISES: dict[str, type[Noise]] = {cls.name: cls for cls in (Gaussian, Laplace, Uniform)}


def make_noise(name: str, sigma: float) -> Noise:
    """The noise called `name` with standard deviation `sigma`; L1CertError on bad input."""
    try:
        cls = NOISES[name]
    except KeyError:
        raise L1CertError(f"unknown noise {name!r} (choose from {', '.join(NOISES)})") from None
    return cls(sigma)
