import sys
from pathlib import Path

import numpy as np
import pytest

from l1cert import bounds, sequential
from l1cert.stats import lower_confidence_bound
from l1cert.utils import L1CertError

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import simulation  # noqa: E402  (benchmarks/simulation.py: simulated counts, not library code)

GRID = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
SCALE = 0.5 / np.sqrt(2)  # Laplace λ at σ = 0.5
ALPHA = 0.1  # large, so that a broken split shows in a few thousand repetitions
REPS = 3000


def slack(alpha, reps):
    return 3 * np.sqrt(alpha * (1 - alpha) / reps)


def test_looks():
    assert sequential.looks(100_000) == [100 * 2**k for k in range(10)] + [100_000]
    assert sequential.looks(100) == [100]
    assert sequential.looks(150) == [100, 150]
    assert sequential.looks(800) == [100, 200, 400, 800]
    grown = sequential.looks(1000, first=1, growth=1.3)
    assert grown[0] == 1 and grown[-1] == 1000 and np.all(np.diff(grown) > 0)


@pytest.mark.parametrize(
    "kwargs",
    [dict(cap=99), dict(cap=1000, first=0), dict(cap=1000, growth=1.0), dict(cap=100.5)],
)
def test_looks_rejects_bad_input(kwargs):
    with pytest.raises(L1CertError):
        sequential.looks(**kwargs)


def test_look_alphas_sum_to_alpha_and_keep_most_for_the_cap():
    a = sequential.look_alphas(0.001, 11, last_share=0.9)
    assert a.sum() == pytest.approx(0.001) and a[-1] == pytest.approx(0.0009)
    assert np.allclose(a[:-1], a[0])
    assert sequential.look_alphas(0.001, 1).tolist() == [0.001]
    with pytest.raises(L1CertError):
        sequential.look_alphas(0.001, 3, last_share=0.0)


@pytest.mark.parametrize(
    "noise, bound",
    [("laplace", "teng"), ("laplace", "lecuyer"), ("gaussian", "cohen"), ("uniform", "uniform")],
)
def test_inverse_radius_inverts_the_radius(noise, bound):
    r = np.array([0.1, 0.25, 0.5])
    p = bounds.inverse_radius(bound, 0.7, r)
    assert np.allclose(bounds.radius(bound, noise, 0.7, p), r)
    assert bounds.inverse_radius(bound, 0.7, 0.0) == pytest.approx(0.5)


def simulate(probs, cap=3200, **levels):
    looks = sequential.looks(cap)
    rng = np.random.default_rng(int(1e6 * probs[0]))
    counts = simulation.draw_counts(np.tile(probs, (REPS, 1)), looks, rng)
    stop, b = simulation.run(counts, looks, ALPHA, len(probs), "laplace", SCALE, GRID, **levels)
    return looks, counts, stop, b


ON_THRESHOLDS = [float(bounds.inverse_radius("teng", SCALE, r)) for r in GRID[:4]]


@pytest.mark.parametrize("p", [0.3, 0.7, 0.97, *ON_THRESHOLDS])
def test_lower_bound_at_stopping_covers(p):
    looks, counts, stop, b = simulate([p, 1 - p])
    assert np.mean(b.pa_lower > p) <= ALPHA + slack(ALPHA, REPS)
    # simultaneously over all looks, not only at the stopping one
    b_all = sequential.ends(counts[..., 0], counts[..., 1], np.arange(len(looks))[:, None],
                              looks, ALPHA, 2)  # fmt: skip
    misses = np.mean((b_all.pa_lower > p).any(axis=0))
    assert misses <= ALPHA + slack(ALPHA, REPS)
    if p > 0.5:
        assert misses > ALPHA / 10  # a real bound, not a vacuous one


@pytest.mark.parametrize("probs", [[0.5, 0.3, 0.2], [0.45, 0.3, 0.25], [0.8, 0.1, 0.1]])
def test_runner_up_bound_at_stopping_covers(probs):
    _, _, _, b = simulate(probs)
    p_a, p_b = probs[0], max(probs[1:])
    assert np.mean(b.pb_upper < p_b) <= ALPHA / 2 + slack(ALPHA / 2, REPS)
    joint_miss = (b.pb_upper < p_b) | (b.pa_joint > p_a)
    assert np.mean(joint_miss) <= ALPHA + slack(ALPHA, REPS)


def test_two_classes_do_not_halve_alpha():
    b = sequential.ends(np.array([900]), np.array([100]), 0, [1000], 0.001, 2)
    assert b.pa_joint == b.pa_lower and b.pb_upper == 1 - b.pa_lower
    b3 = sequential.ends(np.array([900]), np.array([100]), 0, [1000], 0.001, 3)
    assert b3.pa_joint < b3.pa_lower


def test_theorem_1_certifies_below_one_half_and_decides_there():
    looks = sequential.looks(100_000)
    last = len(looks) - 1
    b, stop = sequential.step(45_000, 30_000, last, looks, 0.001, 3, "laplace", SCALE, GRID)
    r = sequential.bound_radii(b, "laplace", SCALE)
    assert b.pa_lower <= 0.5 and stop
    assert r["teng_multiclass"] > 0 and r["teng"] == 0
    # the stopping rule settles teng_multiclass's bucket (certified at r = 0 only) early
    _, _, stop, b = simulate([0.45, 0.3, 0.25], cap=100_000)
    assert np.mean(stop < last) > 0.9
    multi = sequential.bucket("teng_multiclass", "laplace", SCALE, b.pa_joint, b.pb_upper, GRID)
    assert np.mean(multi == 1) > 0.9


def test_optimistic_ends_predict_the_cap_from_the_votes_seen():
    looks, last = sequential.looks(100_000), 10
    shares = np.array([0.7, 0.2])  # of ĉA and the runner-up, seen at every look

    def at(look, **levels):
        count_a, count_b = shares * looks[look]
        return sequential.ends(count_a, count_b, look, looks, 0.001, 10, **levels)

    # at the cap nothing is left to draw: the optimistic ends are the cap's own bounds
    cap = at(last)
    assert cap.pa_upper == pytest.approx(cap.pa_lower)
    assert (cap.pa_upper_joint, cap.pb_lower) == pytest.approx((cap.pa_joint, cap.pb_upper))
    # before it only the draws still to come move the share: the end lies between the cap's
    # bound at the share seen and that at the plain upper bound
    b, plain = at(6), at(6, project=False)  # after 6 400 draws
    plain_at_cap = lower_confidence_bound(looks[last] * plain.pa_upper, looks[last], 0.0009)
    assert cap.pa_lower < b.pa_upper < plain_at_cap


def test_easy_points_stop_early_and_keep_the_fixed_n_bucket():
    """p_A = 1 at σ = 1: every top radius needs about a thousand draws, not 10⁵."""
    scale = 1.0 / np.sqrt(2)
    looks = sequential.looks(100_000)
    counts = np.array(looks)
    b, stop = sequential.step(counts, 0 * counts, np.arange(len(looks)), looks, 0.001, 10,
                              "laplace", scale, GRID)  # fmt: skip
    first = int(np.argmax(stop))
    assert looks[first] <= 1600  # lecuyer and teng_multiclass (K = 10) need the most
    top = sequential.bucket("teng", "laplace", scale, b.pa_lower, None, GRID)
    assert top[first] == len(GRID) == top[-1]


def test_cap_keeps_the_top_bucket_at_sigma_012():
    """With k = n = 10⁵ the Laplace cap radius 8.887λ just beats 0.75 at σ = 0.12: the
    sequential bound at the cap must keep it (an even α split loses it)."""
    scale, looks = 0.12 / np.sqrt(2), sequential.looks(100_000)
    b, _ = sequential.step(100_000, 0, len(looks) - 1, looks, 0.001, 10, "laplace", scale, GRID)
    assert sequential.bound_radii(b, "laplace", scale)["teng"] >= 0.75
    even = sequential.ends(100_000, 0, len(looks) - 1, looks, 0.001, 10, 1 / len(looks))
    assert bounds.teng(even.pa_lower, scale) < 0.75


def test_unknown_noise_is_refused():
    with pytest.raises(L1CertError):
        sequential.step(10, 0, 0, [100], 0.001, 2, "cauchy", 1.0, GRID)
