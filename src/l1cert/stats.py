"""Confidence bounds and tests of Cohen et al.'s CERTIFY and PREDICT."""

from __future__ import annotations

import numpy as np


def lower_confidence_bound(k, n, alpha):
    """One-sided Clopper–Pearson lower bound: P(p ≥ bound) ≥ 1 − alpha for k successes of n.

    The alpha-quantile of Beta(k, n − k + 1); 0 when k = 0. Vectorised over k. The quantile
    is scipy.special's `betaincinv`, the same numbers as `scipy.stats.beta.ppf` at a quarter of
    the cost per call (sequential certification calls it once per round) and without importing
    scipy.stats, which takes seconds.
    """
    from scipy.special import betaincinv

    k = np.asarray(k, dtype=float)
    with np.errstate(invalid="ignore"):
        bound = betaincinv(k, n - k + 1, alpha)
    return np.where(k > 0, bound, 0.0)[()]


def upper_confidence_bound(k, n, alpha):
    """One-sided Clopper–Pearson upper bound: P(p ≤ bound) ≥ 1 − alpha; 1 when k = n."""
    from scipy.special import betaincinv

    k = np.asarray(k, dtype=float)
    with np.errstate(invalid="ignore"):
        bound = betaincinv(k + 1, n - k, 1.0 - alpha)
    return np.where(k < n, bound, 1.0)[()]


def top_two_pvalue(count_a: int, count_b: int) -> float:
    """Two-sided binomial test of PREDICT: is the top class really more frequent than the next?"""
    from scipy.stats import binomtest

    if count_a + count_b == 0:
        return 1.0
    return float(binomtest(int(count_a), int(count_a + count_b), 0.5).pvalue)
