"""The smoothing noises, one class each, matched by their per-coordinate standard deviation σ.

Each class knows its scale (the parameter of its distribution), draws samples in place on the
tensor's device from a `torch.Generator`, and names the certificates that apply to it
(`l1cert.certificates`), the first one being the primary bound reported in the `radius` column.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # the noise table is read without torch (report, workflow); samplers import it
    import torch

from l1cert.utils import L1CertError

# σ is in [0, 1] pixel units: beyond this a smoothed classifier sees only noise, and a typo
# (1e308) is refused before it overflows a scale or a sampler.
SIGMA_MAX = 10.0


class Noise:
    """Additive iid noise with per-coordinate standard deviation `sigma`."""

    name: ClassVar[str]
    bounds: ClassVar[tuple[str, ...]]  # certificates that apply; the first is the primary one
    samplings: ClassVar[tuple[str, ...]] = ("fixed", "sequential")  # l1cert.sampling's modes

    def __init__(self, sigma: float):
        try:
            sigma = float(sigma)
        except (TypeError, ValueError):
            raise L1CertError(f"sigma must be a positive number, got {sigma!r}") from None
        if not 0 < sigma <= SIGMA_MAX:
            raise L1CertError(f"sigma must be a positive number at most {SIGMA_MAX:g}, got {sigma}")
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

    def perturb_(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        scratch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fill `out` with x + noise (x broadcast over the batch), in place; `scratch`, a
        tensor like `out`, spares samplers that need room an allocation."""
        return self.sample_(out, generator).add_(x)

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
        return self.perturb_(out, 0.0, generator)

    def perturb_(self, out, x, generator=None, scratch=None):
        import torch

        # Inverse CDF: u ~ U(-1, 1) gives -λ·sign(u)·ln|u| ~ Laplace(0, λ); six passes in all.
        out.uniform_(-1.0, 1.0, generator=generator)
        magnitude = torch.abs(out, out=scratch) if scratch is not None else out.abs()
        tiny = torch.finfo(out.dtype).tiny  # u = 0 has probability ~2^-24: keep ln|u| finite
        magnitude.clamp_min_(tiny).log_()
        torch.copysign(magnitude, out, out=out)
        return torch.add(torch.as_tensor(x, dtype=out.dtype), out, alpha=-self.scale, out=out)


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


def noise_class(name: str) -> type[Noise]:
    """The registry entry of the noise called `name`; L1CertError if there is none."""
    try:
        return NOISES[name]
    except (KeyError, TypeError):
        raise L1CertError(f"unknown noise {name!r} (choose from {', '.join(NOISES)})") from None


def make_noise(name: str, sigma: float) -> Noise:
    """The noise called `name` with standard deviation `sigma`; L1CertError on bad input."""
    return noise_class(name)(sigma)
