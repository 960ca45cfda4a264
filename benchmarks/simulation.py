"""Simulated sequential certification: the stopping rule of `l1cert.sequential` applied to
class counts drawn from known probabilities. Used by tests/test_sequential.py and the
benchmarks, not by l1cert itself.
"""

from __future__ import annotations

import numpy as np

from l1cert.sequential import Ends, step


def draw_counts(probs, looks_: list[int], rng: np.random.Generator) -> np.ndarray:
    """Simulated cumulative class counts at each look, shape (looks, points, classes).

    probs: (points, classes) true class probabilities, class 0 being ĉA.
    """
    probs = np.asarray(probs, dtype=float)
    probs = probs / probs.sum(axis=-1, keepdims=True)
    steps = np.diff(np.concatenate([[0], looks_]))
    draws = [rng.multinomial(m, probs) for m in steps]
    return np.cumsum(draws, axis=0)


def run(
    counts, looks_: list[int], alpha: float, num_classes: int, noise: str, scale: float, grid,
    **levels,
):  # fmt: skip
    """Apply the stopping rule to cumulative counts (looks, points, classes), as CERTIFY would.

    Class 0 is ĉA; the runner-up count is the largest of the others (they may lump classes).
    Returns the stopping look of each point and the Ends there. `levels`: last_share and
    upper_alpha, project of `bounds`.
    """
    counts = np.asarray(counts)
    count_a = counts[..., 0]
    count_b = counts[..., 1:].max(axis=-1) if counts.shape[-1] > 1 else 0 * count_a
    points = count_a.shape[1]
    stop_look = np.full(points, len(looks_) - 1)
    fields = {name: np.zeros(points) for name in Ends._fields}
    active = np.arange(points)
    for j in range(len(looks_)):
        b, stop = step(
            count_a[j, active], count_b[j, active], j, looks_, alpha,
            num_classes, noise, scale, grid, **levels,
        )  # fmt: skip
        done = active[stop]
        stop_look[done] = j
        for name, value in zip(Ends._fields, b, strict=True):
            fields[name][done] = np.broadcast_to(value, stop.shape)[stop]
        active = active[~stop]
    return stop_look, Ends(**fields)
