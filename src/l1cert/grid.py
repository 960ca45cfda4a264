"""The input grid q (pixels are multiples of 1/q) and what DSSN derives from it: the half-width
λ matched to σ and the number L = 2λq of distinct splits. Torch-free, so that checking a
params file (Snakemake's planning) needs no torch."""

from __future__ import annotations

import math

import numpy as np

from l1cert.utils import L1CertError


def check_grid(grid) -> int:
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise L1CertError(f"the grid q must be a positive integer, got {grid!r}")
    return int(grid)


def half_width(sigma: float, grid: int) -> float:
    """λ matched to uniform noise of standard deviation σ (λ = √3·σ), rounded down to a
    multiple of 1/(2q) so that L = 2λq, the number of DSSN offsets, is an integer."""
    q = check_grid(grid)
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise L1CertError(f"sigma must be a finite positive number, got {sigma} (grid q={q})")
    # The tolerance keeps an exact multiple (L = 57 computed as 56.99999999999999) at 57.
    L = math.floor(2 * math.sqrt(3) * sigma * q + 1e-9)
    if L < 2:
        raise L1CertError(f"sigma={sigma:g} on the grid q={q} gives L={L} splits; need L >= 2")
    return L / (2 * q)


def num_offsets(lam: float, grid: int) -> int:
    """L = 2λq, the number of distinct DSSN splits of an on-grid input."""
    q = check_grid(grid)
    L = round(2 * lam * q)
    if L < 1 or abs(2 * lam * q - L) > 1e-6:
        raise L1CertError(
            f"2·lam·q must be a positive integer; lam={lam!r}, q={q} gives {2 * lam * q}"
        )
    return L
