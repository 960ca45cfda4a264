"""ℓ1 certificates for uniform and splitting noise that use the box [0, 1]^d the inputs live in
(Voráček & Hein, ICML 2023).

Under uniform noise U[−λ, λ]^d, and under splitting noise (SSN) with iid offsets, x and x + δ
give smoothed distributions at total variation

    TV(δ) = 1 − Π_i (1 − min(1, |δ_i|/(2λ)))

(uniform: one minus the overlap of two boxes of side 2λ; SSN: the right end of the cell holding
x_i is uniform on [x_i, x_i + 2λ), so the same; clipping the cells to [0, 1] can only lower it).
The top class keeps its lead while p̲A − TV > p̄B + TV, i.e. TV < (p̲A − p̄B)/2. The union bound
TV ≤ ‖δ‖₁/(2λ) gives the usual radius λ·(p̲A − p̄B), but it is attained only by spending the
whole budget on one coordinate, and a perturbed input that stays in [0, 1]^d moves coordinate i
by at most m_i = max(x_i, 1 − x_i).

Worst case. Moving a coordinate by more than 2λ changes nothing, so let a_i = min(m_i, 2λ), the
cap of coordinate i, and t_i = |δ_i|/(2λ) ∈ [0, a_i/(2λ)]. The worst TV for a budget ε,

    TV*(ε) = max {1 − Π_i (1 − t_i) : 0 ≤ t_i ≤ a_i/(2λ), Σ_i t_i ≤ ε/(2λ)},

is attained greedily: fill the coordinates in decreasing order of their caps. Proof: the greedy
vector g puts min(ε/(2λ), sum of the k largest caps/(2λ)) on its first k coordinates, which
bounds the sum of the k largest entries of any feasible t; so t is weakly submajorized by g,
and Σ_i φ(t_i) ≤ Σ_i φ(g_i) for every increasing convex φ (Tomić–Weyl), here φ(t) = −log(1 − t).

Radius. Let A_k be the sum and P_k = Π_{j≤k} (1 − a_j/(2λ)) the product over the k largest caps.
On [A_k, A_{k+1}] the greedy saturates k coordinates and TV*(ε) = 1 − P_k·(1 − (ε − A_k)/(2λ)),
continuous and increasing. With q = 1 − (p̲A − p̄B)/2, the certified radius is where TV* reaches
(p̲A − p̄B)/2:

    R = A_k + 2λ·(1 − q/P_k),   k < d the last index with P_k > q.

R equals the union bound while λ·(p̲A − p̄B) ≤ max_i a_i and exceeds it beyond. When even
P_d > q, every input in the box is certified and any radius from Σ_i m_i (the farthest the box
reaches) on is true; R is then the larger of Σ_i m_i and λ·(p̲A − p̄B), so that it never falls
below the union bound. For uniform noise the density ratio of the two distributions is 0, 1 or
∞, so the Neyman–Pearson worst case is this TV argument: no certificate from p̲A and p̄B alone
certifies farther in the box.

Products of up to 150 528 factors (ImageNet) are kept as sums of log1p. Every function is
vectorised over points: x has shape (points, ...), each point flattened to its d coordinates.
"""

from __future__ import annotations

import numpy as np

from l1cert.utils import L1CertError


def _points(x) -> np.ndarray:
    """x as (points, d) float64, checked to lie in [0, 1]."""
    x = np.asarray(x, dtype=float)
    if x.ndim < 1:
        raise L1CertError("x needs a leading axis of points, got a scalar")
    x = x.reshape(len(x), -1)
    if not np.all((x >= 0.0) & (x <= 1.0)):  # also refuses NaN
        raise L1CertError("box certificates need inputs in [0, 1]")
    return x


def _check_lam(lam) -> float:
    lam = float(lam)
    if not (np.isfinite(lam) and lam > 0):
        raise L1CertError(f"lam must be a finite positive number, got {lam}")
    return lam


def _per_point(value, points: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=float), (points,))


def caps(x, lam) -> np.ndarray:
    """The caps a_i = min(max(x_i, 1 − x_i), 2λ) of each point, flattened, sorted descending."""
    x = _points(x)
    reach = np.minimum(np.maximum(x, 1.0 - x), 2.0 * _check_lam(lam))
    return -np.sort(-reach, axis=1)


def _greedy(x, lam):
    """Caps, their prefix sums A_k and prefix log-products log P_k (k = 0..d) for each point."""
    a = caps(x, lam)
    zero = np.zeros((len(a), 1))
    with np.errstate(divide="ignore"):  # a cap of 2λ: log(0) = −inf, TV reaches 1
        log_factors = np.log1p(-a / (2.0 * lam))
    sums = np.concatenate([zero, np.cumsum(a, axis=1)], axis=1)
    log_prods = np.concatenate([zero, np.cumsum(log_factors, axis=1)], axis=1)
    return a, sums, log_prods


def tv(delta, lam) -> np.ndarray:
    """TV(δ) = 1 − Π_i (1 − min(1, |δ_i|/(2λ))) for each point of δ (shape (points, ...))."""
    delta = np.asarray(delta, dtype=float)
    t = np.minimum(np.abs(delta.reshape(len(delta), -1)) / (2.0 * _check_lam(lam)), 1.0)
    with np.errstate(divide="ignore"):
        return 0.0 - np.expm1(np.sum(np.log1p(-t), axis=1))  # 0.0 −: no −0 for δ = 0


def worst_tv(eps, x, lam) -> np.ndarray:
    """TV*(ε): the largest TV(δ) over δ with ‖δ‖₁ ≤ ε and x + δ in [0, 1]^d, per point.

    ε is a scalar or one budget per point."""
    lam = _check_lam(lam)
    a, sums, log_prods = _greedy(x, lam)
    points, d = a.shape
    eps = _per_point(eps, points)
    if np.any(~(eps >= 0)):
        raise L1CertError("eps must be non-negative")
    rows = np.arange(points)
    saturated = np.sum(sums[:, 1:] <= eps[:, None], axis=1)  # k: the caps the budget fills
    # what is left moves the next coordinate; beyond Σ a_i nothing is left to move
    partial = np.where(saturated < d, eps - sums[rows, saturated], 0.0)
    with np.errstate(divide="ignore"):
        log_prod = log_prods[rows, saturated] + np.log1p(-partial / (2.0 * lam))
    return 0.0 - np.expm1(log_prod)


def box_radius(pa, pb, x, lam) -> np.ndarray:
    """The certified ℓ1 radius within [0, 1]^d per point, for a lower bound `pa` of the top
    class's probability and an upper bound `pb` of the runner-up's; 0 where pa ≤ pb."""
    lam = _check_lam(lam)
    a, sums, log_prods = _greedy(x, lam)
    points, d = a.shape
    gap = _per_point(pa, points) - _per_point(pb, points)
    certified = gap > 0
    log_q = np.log1p(-np.where(certified, gap, 0.0) / 2.0)
    # k: coordinates the greedy can saturate with the product still above q (log P_k decreases)
    saturated = np.sum(log_prods[:, 1:] > log_q[:, None], axis=1)
    inside = saturated < d
    k = np.minimum(saturated, d - 1)
    rows = np.arange(points)
    # The last coordinate moves by u, where P_k·(1 − u/(2λ)) = q; for k = 0 this is λ·gap to the
    # last bit, since −expm1(log1p(−gap/2)) = gap/2. The clip only absorbs rounding.
    partial = np.clip(-2.0 * lam * np.expm1(log_q - log_prods[rows, k]), 0.0, a[rows, k])
    everything = np.maximum(sums[:, d], lam * gap)  # all of the box is certified
    radius = np.where(inside, sums[rows, k] + partial, everything)
    return np.where(certified, radius, 0.0)
