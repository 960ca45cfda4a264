"""Splitting noise and its deterministic ℓ1 certificate (Levine & Feizi, ICML 2021, arXiv
2103.10834).

Splitting noise replaces each coordinate by the middle of the cell that holds it, where the
cells are intervals of width 2λ cut at a per-coordinate offset s_i (and clipped to [0, 1]).
Two inputs land in different cells of coordinate i with probability min(1, |δ_i|/(2λ)) as soon
as s_i is marginally uniform on [0, 2λ), so a union bound certifies the smoothed classifier in
ℓ1. SSN draws the offsets iid; DSSN (deterministic SSN) shifts one fixed template v by a single
scalar s, s_i = (v_i + s) mod 2λ. For inputs on a grid of step 1/q with L = 2λq an integer and
v itself on that grid, only L values of s give different splits, so the class probabilities are
vote counts over L inputs: exact, with no sampling and no abstention. The certificate is an
integer one: an on-grid x' at ℓ1 distance m/q changes at most m of the L votes.

The template is kept on the grid (multiples of 1/q) on purpose: every cut then sits half a grid
step from any pixel value, so float32 arithmetic decides each cell exactly. With a continuous
template a cut can sit within float error of a pixel value and one grid step can flip two votes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from l1cert.grid import check_grid, num_offsets
from l1cert.utils import L1CertError

# A float32 pixel k/q is within 6e-8 of it; 1e-5 is far below half a grid step for any q < 10⁴.
ON_GRID_TOL = 1e-5


def split(x: torch.Tensor, offsets: torch.Tensor, lam: float) -> torch.Tensor:
    """The split input: per coordinate, the middle of the [0, 1]-clipped cell of width 2λ
    (cut at offset + 2λk) that holds x. A point on a cut belongs to the cell on its left.

    x and offsets broadcast against each other (offsets may carry leading batch dims)."""
    width = 2 * lam
    right = offsets + width * torch.ceil((x - offsets) / width)  # the cell's right end
    return (right.clamp(max=1.0) + (right - width).clamp(min=0.0)) / 2


def random_offsets(
    shape: Sequence[int],
    lam: float,
    generator: torch.Generator | None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """SSN offsets, iid U[0, 2λ) per coordinate (the generator must live on `device`).

    float rounding may return 2λ itself; that cuts the line exactly where 0 does."""
    return torch.rand(tuple(shape), generator=generator, device=device, dtype=dtype) * (2 * lam)


def make_template(shape: Sequence[int], lam: float, grid: int, seed: int) -> torch.Tensor:
    """The DSSN template v, a property of the model (stored in its checkpoint, used in training
    and certification): v_i iid uniform on the grid points {0, 1/q, …, (L−1)/q} of [0, 2λ).

    Drawn on the CPU from a generator seeded with `seed`, so every machine rebuilds the same v.
    For s ~ U[0, 2λ), (v_i + s) mod 2λ is U[0, 2λ) for any fixed v_i, as the bound needs."""
    L = num_offsets(lam, grid)
    steps = torch.randint(0, L, tuple(shape), generator=torch.Generator().manual_seed(seed))
    return (steps.double() / grid).float().contiguous()


def template_sha256(template: torch.Tensor) -> str:
    """A digest of the template's values (shape and float32 bytes): shards and merges of one
    DSSN model share it."""
    import hashlib

    values = template.detach().to("cpu", torch.float32).contiguous()
    digest = hashlib.sha256(str(tuple(values.shape)).encode())
    digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def check_template(template, shape, lam: float, grid: int) -> torch.Tensor:
    """The template a dssn checkpoint carries, if it fits the model's inputs and grid; one line
    otherwise."""
    if not isinstance(template, torch.Tensor):
        raise L1CertError("a dssn model needs its template, and this checkpoint has none")
    if tuple(template.shape) != tuple(shape):
        raise L1CertError(
            f"the checkpoint's dssn template has shape {tuple(template.shape)}, its inputs "
            f"{tuple(shape)}"
        )
    template_steps(template, num_offsets(lam, grid), grid)
    return template


def template_steps(template: torch.Tensor, L: int, grid: int) -> torch.Tensor:
    """The template in grid steps, k_i = v_i·q, checked to be integers in [0, L)."""
    scaled = template.double() * grid
    steps = torch.round(scaled)
    if not torch.all((scaled - steps).abs() <= 1e-3) or not torch.all((steps >= 0) & (steps < L)):
        raise L1CertError(
            f"the DSSN template must hold multiples of 1/{grid} in [0, 2·lam) = [0, {L}/{grid}); "
            "make it with make_template"
        )
    return steps.long()


def dssn_offsets(template: torch.Tensor, lam: float, grid: int, copies=None) -> torch.Tensor:
    """DSSN offsets s_j = (v + (j + ½)/q) mod 2λ for the copies j in `copies` (a LongTensor of
    copy numbers, one per row; None: all L), shape (len(copies), *template.shape)."""
    L = num_offsets(lam, grid)
    steps = template_steps(template, L, grid)
    if copies is None:
        copies = torch.arange(L, device=template.device)
    return offsets_of(steps, copies, L, grid, template.dtype)


def offsets_of(steps: torch.Tensor, copies: torch.Tensor, L: int, grid: int, dtype):
    """`dssn_offsets` from the template's steps: ((k + j) mod L + ½)/q in float64, then cast —
    the mod is exact and every offset sits half a step off the grid. Only the rows asked for
    are built, so certification's memory follows its batch, not L."""
    j = copies.to(steps.device).view(-1, *([1] * steps.dim()))
    return (((steps + j) % L).double() + 0.5).div(grid).to(dtype)


def _off_grid(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Per coordinate: farther than ON_GRID_TOL from every k/q with k = 0…q."""
    scaled = x.detach().double() * grid
    steps = torch.round(scaled)
    return ((scaled - steps).abs() > ON_GRID_TOL * grid) | (steps < 0) | (steps > grid)


def off_grid_points(xs: torch.Tensor, grid: int) -> torch.Tensor:
    """The indices of the points (rows of xs) with a coordinate off the grid."""
    return torch.nonzero(_off_grid(xs, check_grid(grid)).flatten(1).any(dim=1)).flatten()


def check_on_grid(x: torch.Tensor, grid: int, what: str = "input") -> None:
    """Refuse an x with a coordinate farther than ON_GRID_TOL from every k/q, k = 0…q.

    The certificate holds for on-grid inputs only; an off-grid input is an error, never
    silently rounded."""
    q = check_grid(grid)
    bad = _off_grid(x, q)
    if torch.any(bad):
        first = tuple(int(i) for i in torch.nonzero(bad)[0])
        value = float(x.detach()[first])
        raise L1CertError(f"{what} is not on the grid k/{q} in [0, 1]: {value!r} at {first}")


@dataclass(frozen=True, eq=False)
class ExactCertificate:
    """Per point: the prediction A and its count, the runner-up B that limits the radius and
    its count, and the certified ℓ1 radius (what an exact noise's `exact_certificate` gives)."""

    predict: np.ndarray
    count: np.ndarray
    runner_up: np.ndarray
    count_b: np.ndarray
    radius: np.ndarray


def dssn_certify(counts, grid: int) -> ExactCertificate:
    """The exact DSSN certificate from vote counts of shape (points, classes).

    A = argmax (ties to the lowest class, as numpy and torch break them). An on-grid x' at
    distance m/q moves at most m votes, so against class c the worst case is N_A − m vs
    N_c + m: A holds while that gap is positive, or zero when a tie still goes to A (A < c).
    Radius = min over c ≠ A of ⌊(N_A − N_c − t_c)/2⌋ / q, t_c = 1 if c < A else 0. B is the
    class that attains it (lowest index among equals). One class would have no runner-up and
    an infinite radius; it is refused rather than written as inf. `bounds.dssn` computes
    the same radius from (N_A, N_B, A, B) for re-derivation; it is not called here so that
    training, which imports this module, does not depend on the certificates' code."""
    q = check_grid(grid)
    counts = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] < 2:
        raise L1CertError(f"counts must be (points, classes >= 2), got shape {counts.shape}")
    counts = counts.astype(np.int64)
    rows = np.arange(counts.shape[0])
    a = counts.argmax(axis=1)
    n_a = counts[rows, a]
    # N_c + t_c: what each rival needs to reach; A itself is taken out of the running.
    pressure = counts + (np.arange(counts.shape[1])[None, :] < a[:, None])
    pressure[rows, a] = np.iinfo(np.int64).min
    b = pressure.argmax(axis=1)
    radius = ((n_a - pressure[rows, b]) // 2) / q
    return ExactCertificate(a, n_a, b, counts[rows, b], radius)
