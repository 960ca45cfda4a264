import math

import numpy as np
import pytest
from scipy.stats import norm

from l1cert import bounds as C
from l1cert.noise import make_noise
from l1cert.stats import lower_confidence_bound
from l1cert.utils import L1CertError

LAMBDA = 0.7


def test_closed_forms():
    assert C.teng(0.99, LAMBDA) == pytest.approx(-LAMBDA * math.log(0.02))
    assert C.lecuyer(0.99, LAMBDA) == pytest.approx(LAMBDA / 2 * math.log(99))
    assert C.teng_multiclass(0.8, 0.1, LAMBDA) == pytest.approx(
        max(LAMBDA / 2 * math.log(8), -LAMBDA * math.log(0.3))
    )
    assert C.cohen(0.975, LAMBDA) == pytest.approx(LAMBDA * 1.959963984540054)
    assert C.uniform(0.8, LAMBDA) == pytest.approx(2 * LAMBDA * 0.3)


def test_vectorised_with_abstain():
    pa = np.array([0.2, 0.5, 0.6, 0.9])
    for bound in (C.teng, C.lecuyer, C.cohen, C.uniform):
        r = bound(pa, LAMBDA)
        assert r.shape == pa.shape
        assert r[0] == r[1] == 0.0 and 0 < r[2] < r[3]
    multi = C.teng_multiclass(pa, np.array([0.3, 0.5, 0.1, 0.95]), LAMBDA)
    assert multi[0] == multi[1] == multi[3] == 0.0 and multi[2] > 0
    assert C.teng_multiclass(0.45, 0.05, LAMBDA) > 0  # Thm 1 needs only p̲A > p̄B


def test_teng_at_least_lecuyer_everywhere():
    pa = np.linspace(0.0, 0.999999, 20_001)
    teng, lecuyer = C.teng(pa, LAMBDA), C.lecuyer(pa, LAMBDA)
    assert np.all(teng >= lecuyer - 1e-12)
    assert np.all(teng[pa > 0.5] > lecuyer[pa > 0.5])  # strictly, wherever either certifies


def test_multiclass_beats_dp_exactly_on_remark_2_interval():
    rng = np.random.default_rng(0)
    pa = rng.uniform(0.05, 0.999, 20_000)
    pb = rng.uniform(0, 1, 20_000) * pa  # p̄B < p̲A
    q = pa * (1 - pa)
    low = (1 - 2 * q - np.sqrt(1 - 4 * q)) / (2 * pa)
    high = (1 - 2 * q + np.sqrt(1 - 4 * q)) / (2 * pa)
    dp = LAMBDA / 2 * np.log(pa / pb)
    new_term = -LAMBDA * np.log(1 - pa + pb)
    inside = (low <= pb) & (pb <= high)
    assert 1000 < inside.sum() < len(pa) - 1000  # both cases are exercised
    margin = np.abs(new_term - dp) > 1e-9
    assert np.all((new_term > dp)[margin] == inside[margin])
    assert np.allclose(C.teng_multiclass(pa, pb, LAMBDA), np.maximum(dp, new_term))


def test_laplace_radius_cap_at_paper_scale():
    n, alpha = 100_000, 0.001
    best_pa = lower_confidence_bound(n, n, alpha)
    assert best_pa == pytest.approx(alpha ** (1 / n))
    assert best_pa == pytest.approx(0.999931, abs=1e-6)
    assert C.teng(best_pa, 1.0) == pytest.approx(8.887, abs=1e-3)
    assert C.teng(lower_confidence_bound(np.arange(n + 1), n, alpha), 1.0).max() < 8.888


def test_registry_and_bad_bounds():
    assert C.radius("teng", "laplace", LAMBDA, 0.9) == pytest.approx(C.teng(0.9, LAMBDA))
    # without p̄B, teng_multiclass takes the binary p̄B = 1 - p̲A
    assert C.radius("teng_multiclass", "laplace", 1.0, 0.9) == pytest.approx(-math.log(0.2))
    with pytest.raises(L1CertError, match="unknown bound 'l2'"):
        C.check_bound("l2", "laplace")
    with pytest.raises(L1CertError, match="'lecuyer' holds for laplace noise, not gaussian"):
        C.check_bound("lecuyer", "gaussian")
    with pytest.raises(L1CertError, match="unknown noise"):
        C.check_bound("teng", "cauchy")
    with pytest.raises(L1CertError, match="pa"):
        C.radius_per_bound("laplace", 0.5, 1.5)
    assert list(C.radius_per_bound("laplace", 0.5, 0.9)) == ["teng", "lecuyer", "teng_multiclass"]


# --- soundness and tightness on the half-space f(x) = 1[x1 > t] ---------------------------


def smoothed_probability(name, scale, margin):
    """Exact P(x1 + ε1 > t) for margin = x1 - t: the half-space's smoothed probability."""
    margin = np.asarray(margin, dtype=float)
    if name == "laplace":
        tail = 0.5 * np.exp(-np.abs(margin) / scale)
        return np.where(margin >= 0, 1 - tail, tail)
    if name == "uniform":
        return np.clip((margin + scale) / (2 * scale), 0, 1)
    return norm.cdf(margin / scale)


@pytest.mark.parametrize("name", ["laplace", "uniform", "gaussian"])
@pytest.mark.parametrize("margin_in_scales", [0.1, 0.5, 0.9, 3.0])
def test_half_space_soundness_and_tightness(name, margin_in_scales):
    noise = make_noise(name, 0.5)
    scale = noise.scale
    margin = margin_in_scales * scale
    if name == "uniform" and margin >= scale:
        margin = 0.95 * scale  # p = 1 beyond the support: every radius is unbounded
    p = smoothed_probability(name, scale, margin)
    radius = float(C.radius(noise.primary_bound, name, scale, p))
    # the certified radius is exactly the distance to the boundary: tight
    assert radius == pytest.approx(margin, rel=1e-9)

    # moving slightly more than R along -e1 flips the smoothed prediction (Thm 3)
    eta = 1e-6 * scale
    assert smoothed_probability(name, scale, margin - (radius + eta)) < 0.5
    # no perturbation of l1 norm <= R flips it: x1 moves by at most |δ1| <= ‖δ‖1
    rng = np.random.default_rng(1)
    deltas = rng.laplace(size=(2000, 10)) * rng.uniform(0, 1, size=(2000, 1)) ** 3
    deltas *= radius / np.abs(deltas).sum(axis=1, keepdims=True)
    assert np.all(smoothed_probability(name, scale, margin + deltas[:, 0]) >= 0.5 - 1e-12)

    # the other bounds of the noise are sound (never beyond the tight radius); a box bound's
    # soundness is within [0, 1]^d, brute-forced in test_box.py
    for bound in noise.bounds:
        if not C.BOUNDS[bound].needs_point:
            assert C.radius(bound, name, scale, p) <= radius * (1 + 1e-9)


def test_theorem1_beats_dp_exactly_on_remark2_interval():
    rng = np.random.default_rng(0)
    pa = rng.uniform(0.0, 1.0, 20000)
    pb = rng.uniform(0.0, 1.0, 20000) * np.minimum(pa, 1.0 - pa)  # admissible: pb ≤ pa, pa+pb ≤ 1
    # Remark 2: better iff (1−2p(1−p) − √(1−4p(1−p)))/(2p) ≤ pB ≤ (1−2p(1−p) + √(…))/(2p).
    root = np.sqrt(1.0 - 4.0 * pa * (1.0 - pa))
    low = (1.0 - 2.0 * pa * (1.0 - pa) - root) / (2.0 * pa)
    high = (1.0 - 2.0 * pa * (1.0 - pa) + root) / (2.0 * pa)
    clear = (np.abs(pb - low) > 1e-6) & (np.abs(pb - high) > 1e-6) & (pa - pb > 1e-6)
    beats = C.thm1_beats_dp(pa, pb)
    assert np.array_equal(beats[clear], ((low < pb) & (pb < high))[clear])
    assert beats.any() and not beats.all()
    assert not beats[pa < 0.5].any()
