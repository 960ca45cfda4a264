import numpy as np
import pytest
from scipy.stats import beta

from l1cert.stats import lower_confidence_bound, top_two_pvalue, upper_confidence_bound


def test_clopper_pearson_closed_forms():
    # k = n: the lower bound solves p^n = alpha; k = 0: the upper bound solves (1-p)^n = alpha
    assert lower_confidence_bound(100, 100, 0.01) == pytest.approx(0.01 ** (1 / 100))
    assert upper_confidence_bound(0, 100, 0.01) == pytest.approx(1 - 0.01 ** (1 / 100))
    assert lower_confidence_bound(0, 100, 0.01) == 0.0
    assert upper_confidence_bound(100, 100, 0.01) == 1.0
    assert lower_confidence_bound(30, 100, 0.05) == pytest.approx(beta.ppf(0.05, 30, 71))


def test_bounds_bracket_the_estimate_and_are_vectorised():
    k = np.arange(0, 51)
    lower, upper = lower_confidence_bound(k, 50, 0.001), upper_confidence_bound(k, 50, 0.001)
    assert lower.shape == upper.shape == k.shape
    assert np.all(lower <= k / 50) and np.all(k / 50 <= upper)
    assert np.all(np.diff(lower) > 0) and np.all(np.diff(upper) > 0)


@pytest.mark.parametrize("p", [0.3, 0.9, 0.97])
def test_coverage_on_a_bernoulli_source(p):
    """The bound fails (exceeds the truth) in at most about alpha of the repetitions."""
    alpha, n, reps = 0.05, 200, 20_000
    k = np.random.default_rng(0).binomial(n, p, size=reps)
    lower_misses = np.mean(lower_confidence_bound(k, n, alpha) > p)
    upper_misses = np.mean(upper_confidence_bound(k, n, alpha) < p)
    slack = 3 * np.sqrt(alpha * (1 - alpha) / reps)
    assert lower_misses <= alpha + slack
    assert upper_misses <= alpha + slack
    assert lower_misses > alpha / 10  # a real bound, not a vacuous 0


def test_top_two_pvalue():
    # 15 of 20: two-sided binomial p-value = 2 * sum_{j>=15} C(20, j) / 2^20
    assert top_two_pvalue(15, 5) == pytest.approx(2 * 21700 / 2**20)
    assert top_two_pvalue(5, 15) == pytest.approx(2 * 21700 / 2**20)
    assert top_two_pvalue(0, 0) == 1.0
    assert top_two_pvalue(1000, 0) < 1e-100
