"""The smoothing noises, one class each, matched by their per-coordinate standard deviation σ.

Each class knows its scale (the parameter of its distribution), draws samples in place on the
tensor's device from a `torch.Generator`, and names the certificates that apply to it
(`l1cert.bounds`), the first one being the primary bound reported in the `radius` column.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:  # the noise table is read without torch (report, workflow); samplers import it
    import torch

from l1cert.names import check_choice
from l1cert.utils import L1CertError

# σ is in [0, 1] pixel units: beyond this a smoothed classifier sees only noise, and a typo
# (1e308) is refused before it overflows a scale or a sampler.
SIGMA_MAX = 10.0


class Noise:
    """Additive iid noise with per-coordinate standard deviation `sigma`.

    `grid` (the dataset's input grid q: pixels are multiples of 1/q) and `template` (a noise
    state stored with the model) are for the noises that need them (DSSN); others ignore them.
    """

    name: ClassVar[str]
    bounds: ClassVar[tuple[str, ...]]  # certificates that apply; the first is the primary one
    samplings: ClassVar[tuple[str, ...]] = ("fixed", "sequential")  # l1cert.sampling's modes
    additive: ClassVar[bool] = True  # x + ε; else the noise transforms x (splitting)
    state_keys: ClassVar[tuple[str, ...]] = ()  # the tensors a model's checkpoint keeps for it

    def __init__(self, sigma: float, grid: int | None = None, template=None):
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

    # Training: draws of the noise, and noisy inputs from them. SmoothAdv attacks x through
    # apply(), so the attack and the training step see the same noisy copies.
    def draw(self, shape, like: torch.Tensor, generator=None) -> torch.Tensor:
        """Noise draws of `shape` with `like`'s dtype and device (additive: ε itself), laid out
        as `like` when they have its shape."""
        return self.sample_(_empty(shape, like), generator)

    def apply(self, x: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
        """The noisy inputs of x under `draws` (x broadcast against them)."""
        return x + draws

    def augment(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        """x with one noise draw per example: Type 1 training's input."""
        return self.apply(x, self.draw(x.shape, x, generator))

    def sidecar(self) -> dict:
        """What a certify sidecar records about this noise beyond its name, σ and scale."""
        return {}

    # Exact certification (a noise whose sampling modes all count exactly, as a test checks):
    # every point has the same `copies` noisy copies, enumerated rather than drawn;
    # `Smooth.certify_exact` counts the base classifier's votes over all of them and
    # `exact_certificate` turns the counts into radii (its bound's `radius` re-derives them from
    # a row). A released checkpoint, trained without the noise's state, cannot be certified so.
    exact: ClassVar[bool] = False

    @property
    def copies(self) -> int:
        """How many noisy copies of a point an exact noise counts."""
        raise NotImplementedError(f"{self.name} noise is not exact")

    def check_exact(self, xs: torch.Tensor, names) -> None:
        """Refuse the points (rows of xs, named by `names`) the certificate does not hold for."""

    def exact_copies_(self, out: torch.Tensor, xs: torch.Tensor, copies: torch.Tensor):
        """Fill row r of `out` with copy copies[r] of point xs[r]; return `out`."""
        raise NotImplementedError(f"{self.name} noise is not exact")

    def exact_certificate(self, counts):
        """Per point, from vote counts (points, classes): prediction, its count, the runner-up
        that limits the radius, its count, and the radius (an `ExactCertificate`)."""
        raise NotImplementedError(f"{self.name} noise is not exact")

    # Float32 tensors of one batch that certifying with this noise holds at once (the batch,
    # a scratch), for `check_memory`.
    buffers: ClassVar[int] = 2

    @classmethod
    def check_sigma(cls, sigma: float, grid: int) -> None:
        """Refuse a σ that no model of this noise can have on inputs of this grid."""
        if not (isinstance(sigma, int | float) and 0 < sigma <= SIGMA_MAX):
            raise L1CertError(f"sigma must be a positive number at most {SIGMA_MAX:g}, got {sigma}")

    @classmethod
    def for_model(cls, sigma: float, grid: int, input_shape, seed: int) -> Noise:
        """The noise a new model of these inputs trains under (DSSN draws its template)."""
        return cls(sigma, grid)

    def state(self) -> dict:
        """Tensors the model's checkpoint keeps for this noise ({}: none)."""
        return {}

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
    bounds = ("uniform", "uniform_box")

    @property
    def scale(self) -> float:
        return math.sqrt(3.0) * self.sigma

    def sample_(self, out, generator=None):
        return out.uniform_(-self.scale, self.scale, generator=generator)


class Split(Noise):
    """Splitting noise, SSN (Levine & Feizi 2021): each coordinate becomes the middle of its cell
    of width 2λ, cut at an iid offset s_i ~ U[0, 2λ); λ = √3·σ, matched to the uniform noise.

    Not additive: its draws are the offsets. The split is piecewise constant in x, so
    SmoothAdv attacks through it straight-through (the gradient of the identity; docs/design.md).
    """

    name = "split"
    bounds = ("ssn", "ssn_box")
    additive = False

    @property
    def scale(self) -> float:
        return math.sqrt(3.0) * self.sigma

    def offsets_(self, out, generator=None):
        return out.uniform_(0.0, 2.0 * self.scale, generator=generator)

    def perturb_(self, out, x, generator=None, scratch=None):
        from l1cert.splitting import split

        return out.copy_(split(x, self.offsets_(out, generator), self.scale))

    def draw(self, shape, like, generator=None):
        return self.offsets_(_empty(shape, like), generator)

    def apply(self, x, draws):
        from l1cert.splitting import split

        return x + (split(x, draws, self.scale) - x).detach()  # straight-through gradient


class DSSN(Split):
    """Deterministic splitting noise (DSSN): the offsets are one template v, stored with the
    model, shifted by one scalar s: s_i = (v_i + s) mod 2λ. λ = √3·σ rounded down to a multiple
    of 1/(2q) for the dataset's input grid q, so that certification enumerates the L = 2λq
    distinct splits of an on-grid input (its `copies`) and counts votes exactly
    (`l1cert.splitting`)."""

    name = "dssn"
    bounds = ("dssn",)
    samplings = ("exact",)
    exact = True
    state_keys = ("template",)
    buffers = 5  # the batch, its int64 template steps and float64 offsets

    def __init__(self, sigma: float, grid: int | None = None, template=None):
        from l1cert.grid import half_width, num_offsets
        from l1cert.splitting import check_template

        super().__init__(sigma)
        if grid is None:
            raise L1CertError("dssn noise needs the dataset's input grid q (its pixel step 1/q)")
        self.grid = int(grid)
        self.half_width = half_width(self.sigma, self.grid)
        self._copies = num_offsets(self.half_width, self.grid)
        if template is None:
            raise L1CertError("a dssn model needs its template, and this checkpoint has none")
        self.template = check_template(template, template.shape, self.half_width, self.grid)
        self._steps: dict = {}  # the template in grid steps, per device

    @property
    def scale(self) -> float:
        return self.half_width

    @property
    def copies(self) -> int:
        return self._copies

    def draw(self, shape, like, generator=None):
        """One shift s per example (the leading dims of `shape`), the template's offsets."""
        template = self.template.to(like.device, like.dtype)
        rest = (1,) * template.dim()
        shift = like.new_empty((*shape[: len(shape) - template.dim()], *rest))
        return (template + self.offsets_(shift, generator)).remainder_(2.0 * self.scale)

    def perturb_(self, out, x, generator=None, scratch=None):
        return out.copy_(self.apply(x, self.draw(out.shape, out, generator)).detach())

    def check_exact(self, xs, names):
        from l1cert.splitting import check_on_grid, off_grid_points

        off = off_grid_points(xs, self.grid)  # one vectorised pass over all points
        if len(off):
            i = int(off[0])
            check_on_grid(xs[i], self.grid, what=names[i] if names else f"point {i}")

    def exact_copies_(self, out, xs, copies):
        from l1cert.splitting import offsets_of, split, template_steps

        steps = self._steps.get(xs.device)
        if steps is None:
            steps = self._steps[xs.device] = template_steps(
                self.template.to(xs.device), self.copies, self.grid
            )
        offsets = offsets_of(steps, copies, self.copies, self.grid, xs.dtype)
        return out.copy_(split(xs, offsets, self.scale))

    def exact_certificate(self, counts):
        from l1cert.splitting import dssn_certify

        return dssn_certify(counts, self.grid)

    @classmethod
    def check_sigma(cls, sigma, grid):
        from l1cert.grid import half_width

        super().check_sigma(sigma, grid)
        half_width(sigma, grid)  # refuses fewer than 2 copies

    @classmethod
    def for_model(cls, sigma, grid, input_shape, seed):
        from l1cert.grid import half_width
        from l1cert.splitting import make_template

        lam = half_width(sigma, grid)
        return cls(sigma, grid, make_template(input_shape, lam, grid, seed))

    def state(self) -> dict:
        return {"template": self.template}

    def sidecar(self) -> dict:
        from l1cert.splitting import template_sha256

        return {"grid": self.grid, "copies": self.copies,
                "template_sha256": template_sha256(self.template)}  # fmt: skip


def _empty(shape, like):
    import torch

    return torch.empty_like(like) if tuple(shape) == tuple(like.shape) else like.new_empty(shape)


NOISES: dict[str, type[Noise]] = {
    cls.name: cls for cls in (Gaussian, Laplace, Uniform, Split, DSSN)
}


def noise_class(name: str) -> type[Noise]:
    """The registry entry of the noise called `name`; L1CertError if there is none."""
    return NOISES[check_choice("noise", name, tuple(NOISES))]


def make_noise(name: str, sigma: float, grid: int | None = None, template=None) -> Noise:
    """The noise called `name` with standard deviation `sigma` (and, for the noises that use
    them, the dataset's input grid and the model's template); L1CertError on bad input."""
    return noise_class(name)(sigma, grid, template)


def noise_of_model(name: str, sigma: float, grid: int, state: dict, trained: str) -> Noise:
    """The noise `name` a checkpoint's model (trained under noise `trained`) is certified with,
    from the state the checkpoint keeps (DSSN's template): a key the trained noise does not keep
    is refused rather than ignored."""
    kept = noise_class(trained).state_keys
    extra = sorted(set(state) - set(kept))
    if extra:
        raise L1CertError(f"the checkpoint's noise state holds {extra[0]!r}, which {trained} "
                          f"noise does not keep ({', '.join(kept) or 'nothing'})")  # fmt: skip
    cls = noise_class(name)
    return cls(sigma, grid, **{key: state[key] for key in cls.state_keys if key in state})
