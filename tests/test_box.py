"""Box-constrained ℓ1 certificates (l1cert.box): the TV formula, the greedy worst case and the
radius against brute force on tiny inputs, and properties over random points."""

from __future__ import annotations

import itertools
import math
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cut_short, read_table

from l1cert import box
from l1cert.utils import L1CertError

SQRT3 = math.sqrt(3.0)


def random_points(rng, points, d):
    """Points in [0, 1]^d with some coordinates exactly 0, 1/2 and 1 (caps of 1 and 1/2)."""
    x = rng.random((points, d))
    edges = rng.random((points, d)) < 0.3
    x[edges] = rng.choice([0.0, 0.5, 1.0], size=edges.sum())
    return x


def random_bounds(rng, points):
    """(pa, pb) with pa + pb ≤ 1, pa > pb mostly, gaps from tiny to 1."""
    pa = np.concatenate([rng.uniform(0.3, 1.0, points - 2), [1.0, 0.5 + 1e-9]])
    pb = rng.uniform(0.0, 1.0, points) * (1.0 - pa)
    pb[-2:] = [0.0, 0.5 - 1e-9]
    return pa, pb


def reach(x):
    return np.maximum(x, 1.0 - x).reshape(len(x), -1)


def plain_radius(pa, pb, lam):
    return np.maximum(lam * (pa - pb), 0.0)


def grid_deltas(x, lam, steps):
    """Box-respecting perturbations of one point x: a grid per coordinate over [−x_i, 1 − x_i]
    that holds 0, both ends and ±2λ where they fit. Returns the perturbations and the spacing."""
    axes = []
    for xi in x:
        values = np.linspace(-xi, 1.0 - xi, steps)
        extra = [0.0, -xi, 1.0 - xi, 2.0 * lam, -2.0 * lam]
        extra = [v for v in extra if -xi <= v <= 1.0 - xi]
        axes.append(np.unique(np.concatenate([values, extra])))
    deltas = np.array(list(itertools.product(*axes)))
    return deltas, 1.0 / (steps - 1)


def greedy_delta(x, budget):
    """The greedy attack written out: spend the budget on the coordinates of largest reach,
    each moved towards its far end of [0, 1] (no cap at 2λ: moving further is harmless)."""
    delta = np.zeros_like(x)
    for i in np.argsort(-np.maximum(x, 1.0 - x), kind="stable"):
        far = 1.0 - x[i] if x[i] < 0.5 else -x[i]
        step = min(abs(far), budget)
        delta[i] = math.copysign(step, far)
        budget -= step
    return delta


# --- the TV formula -------------------------------------------------------------------------


def test_tv_is_one_minus_box_overlap_for_uniform_noise():
    rng = np.random.default_rng(0)
    for lam in (0.1, 0.4, SQRT3):
        for _ in range(5):
            x, x2 = rng.random(2), rng.random(2)
            # overlap of [x − λ, x + λ]² and [x' − λ, x' + λ]² as interval intersections
            sides = np.minimum(x, x2) + lam - (np.maximum(x, x2) - lam)
            overlap = np.prod(np.maximum(sides, 0.0)) / (2 * lam) ** 2
            assert 1.0 - box.tv((x2 - x)[None], lam)[0] == pytest.approx(overlap, abs=1e-12)

            # and as ∫ min(p, p') over a midpoint grid of the union's bounding box
            n = 800
            lo, hi = np.minimum(x, x2) - lam, np.maximum(x, x2) + lam
            u = lo[0] + (np.arange(n) + 0.5) * (hi[0] - lo[0]) / n
            v = lo[1] + (np.arange(n) + 0.5) * (hi[1] - lo[1]) / n
            uu, vv = np.meshgrid(u, v, indexing="ij")
            inside = (np.abs(uu - x[0]) <= lam) & (np.abs(vv - x[1]) <= lam)
            inside2 = (np.abs(uu - x2[0]) <= lam) & (np.abs(vv - x2[1]) <= lam)
            cell = np.prod(hi - lo) / n**2
            integral = np.sum(inside & inside2) * cell / (2 * lam) ** 2
            assert integral == pytest.approx(overlap, abs=0.01)


def cell_right_end(x, s, lam):
    """SSN's cell for offset s: the right end c = s + 2λ·⌈(x − s)/(2λ)⌉."""
    return s + 2 * lam * np.ceil((x - s) / (2 * lam))


@pytest.mark.parametrize("lam", [0.05, 0.3, SQRT3])
def test_ssn_changes_cell_with_probability_delta_over_2lam(lam):
    n = 100_000
    s = (np.arange(n) + 0.5) * (2 * lam / n)  # the offset's uniform law, integrated on a grid
    rng = np.random.default_rng(1)
    for _ in range(6):
        x, x2 = rng.random(2)
        moved = np.mean(cell_right_end(x, s, lam) != cell_right_end(x2, s, lam))
        assert moved == pytest.approx(min(1.0, abs(x2 - x) / (2 * lam)), abs=3.0 / n)
        # c − x is uniform on [0, 2λ): SSN is uniform noise on [x, x + 2λ) in disguise, so its
        # TV is the uniform one and the shared offset is a maximal coupling
        counts, _ = np.histogram(cell_right_end(x, s, lam) - x, bins=10, range=(0, 2 * lam))
        assert np.all(np.abs(counts - n / 10) <= 1)


def test_ssn_changes_some_cell_with_probability_tv():
    rng = np.random.default_rng(2)
    lam, draws = 0.4, 4000
    for _ in range(3):
        x = rng.random(3)
        x2 = np.clip(x + rng.normal(0, 0.3, 3), 0, 1)
        s = rng.uniform(0, 2 * lam, (draws, 3))
        moved = np.any(cell_right_end(x, s, lam) != cell_right_end(x2, s, lam), axis=1).mean()
        p = box.tv((x2 - x)[None], lam)[0]
        assert abs(moved - p) <= 4 * math.sqrt(p * (1 - p) / draws) + 1e-3


# --- the greedy worst case ------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
def test_worst_tv_is_the_brute_force_maximum(d):
    rng = np.random.default_rng(3)
    for lam in (0.05, 0.3, SQRT3):
        for x in random_points(rng, 3, d):
            deltas, spacing = grid_deltas(x, lam, 41 if d == 3 else 201)
            l1, tvs = np.abs(deltas).sum(axis=1), box.tv(deltas, lam)
            for eps in np.linspace(0.0, reach(x[None]).sum() + 0.2, 9):
                greedy = box.worst_tv(eps, x[None], lam)[0]
                brute = tvs[l1 <= eps + 1e-12].max()
                assert brute <= greedy + 1e-12  # no grid point beats the greedy
                assert brute >= greedy - spacing / (2 * lam)  # up to the grid's resolution


def test_greedy_beats_random_feasible_perturbations():
    rng = np.random.default_rng(4)
    for lam in (0.1, 0.5, SQRT3):
        x = random_points(rng, 1, 8)
        m = reach(x)[0]
        # random box-respecting δ: each coordinate a random fraction of its reach, either way
        # it fits, many of them saturated
        frac = rng.random((20_000, 8)) ** rng.uniform(0.2, 3, (20_000, 1))
        frac[rng.random(frac.shape) < 0.3] = 1.0
        frac[rng.random(frac.shape) < 0.3] = 0.0
        sign = np.where(x[0] < 0.5, 1.0, -1.0)
        deltas = sign * frac * m
        tvs = box.tv(deltas, lam)
        budgets = np.abs(deltas).sum(axis=1)
        worst = box.worst_tv(budgets, np.repeat(x, len(deltas), axis=0), lam)
        assert np.all(tvs <= worst + 1e-12)


# --- the radius -----------------------------------------------------------------------------


@pytest.mark.parametrize("d", [2, 3])
def test_radius_is_sound_and_tight_by_brute_force(d):
    rng = np.random.default_rng(5)
    for lam in (0.05, 0.3, 0.6, SQRT3):
        x = random_points(rng, 4, d)
        pa, pb = random_bounds(rng, 4)
        radii = box.box_radius(pa, pb, x, lam)
        for point, a, b, radius in zip(x, pa, pb, radii, strict=True):
            half_gap = (a - b) / 2
            deltas, spacing = grid_deltas(point, lam, 41 if d == 3 else 201)
            l1, tvs = np.abs(deltas).sum(axis=1), box.tv(deltas, lam)
            # sound: nothing in the box closer than R reaches half the gap
            assert np.all(tvs[l1 < radius * (1 - 1e-9)] < half_gap)
            if radius < reach(point[None]).sum() - 1e-9:
                # tight: the grid reaches half the gap just past R, and so does the greedy
                # attack itself
                assert tvs[l1 <= radius + spacing + 1e-12].max() >= half_gap
                attack = greedy_delta(point, radius * (1 + 1e-9) + 1e-12)
                assert box.tv(attack[None], lam)[0] >= half_gap
            else:  # everything in the box is certified, even the farthest corner
                assert tvs.max() < half_gap


def test_radius_matches_bisection_on_worst_tv():
    rng = np.random.default_rng(6)
    for lam in (0.02, 0.3, SQRT3, 10.0):
        x = random_points(rng, 6, 64)
        pa, pb = random_bounds(rng, 6)
        radii = box.box_radius(pa, pb, x, lam)
        lo, hi = np.zeros(6), reach(x).sum(axis=1)
        for _ in range(80):  # sup{ε : TV*(ε) < (pa − pb)/2}
            mid = (lo + hi) / 2
            below = box.worst_tv(mid, x, lam) < (pa - pb) / 2
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        np.testing.assert_allclose(radii, lo, rtol=1e-9, atol=1e-12)


def test_radius_never_below_and_often_equal_to_the_plain_bound():
    rng = np.random.default_rng(7)
    for lam in np.exp(rng.uniform(np.log(1e-4), np.log(20.0), 40)):
        d = int(rng.integers(1, 40))
        x = random_points(rng, 30, d)
        pa, pb = random_bounds(rng, 30)
        radius, plain = box.box_radius(pa, pb, x, lam), plain_radius(pa, pb, lam)
        assert np.all(radius >= plain * (1 - 1e-12))
        assert np.all(radius <= np.maximum(reach(x).sum(axis=1), plain) * (1 + 1e-12))
        # the union bound is exact while one coordinate can carry the whole plain radius
        one_coordinate = plain <= box.caps(x, lam)[:, 0]
        np.testing.assert_allclose(radius[one_coordinate], plain[one_coordinate], rtol=1e-12)
        # at the radius the worst TV is exactly half the gap
        inside = (pa > pb) & (radius < reach(x).sum(axis=1) * (1 - 1e-12))
        np.testing.assert_allclose(
            box.worst_tv(radius, x, lam)[inside], ((pa - pb) / 2)[inside], rtol=1e-9
        )


def test_radius_is_the_plain_bound_when_2lam_fits_every_coordinate():
    rng = np.random.default_rng(8)
    x = random_points(rng, 50, 20)
    pa, pb = random_bounds(rng, 50)
    for lam in (1e-6, 0.01, 0.1, 0.25):  # 2λ ≤ 1/2 ≤ min_i max(x_i, 1 − x_i)
        np.testing.assert_allclose(
            box.box_radius(pa, pb, x, lam), plain_radius(pa, pb, lam), rtol=1e-12
        )


def test_radius_beats_the_plain_bound_on_digits_like_inputs():
    """σ = 1 uniform noise, λ = √3, on 8×8 images on the grid k/16 with a dark background."""
    rng = np.random.default_rng(9)
    x = rng.integers(0, 17, (20, 8, 8)) / 16
    x[rng.random(x.shape) < 0.5] = 0.0
    lam, pa, pb = SQRT3, 0.99, 0.005
    radius = box.box_radius(pa, pb, x, lam)
    assert np.all(radius > plain_radius(pa, pb, lam) + 0.25)  # 1.99 against 1.71
    # by hand: one background pixel saturated (cap 1), the next moved part way
    q, first = 1 - (pa - pb) / 2, 1 - 1 / (2 * lam)
    np.testing.assert_allclose(radius, 1 + 2 * lam * (1 - q / first), rtol=1e-12)


def test_radius_grows_with_the_gap():
    rng = np.random.default_rng(10)
    x = np.repeat(random_points(rng, 1, 30), 200, axis=0)
    pa = np.linspace(0.5, 1.0, 200)
    for lam in (0.05, 0.5, SQRT3):
        assert np.all(np.diff(box.box_radius(pa, 1 - pa, x, lam)) >= 0)


# --- edge cases -----------------------------------------------------------------------------


def test_no_radius_without_a_gap():
    x = random_points(np.random.default_rng(11), 4, 10)
    np.testing.assert_array_equal(
        box.box_radius([0.5, 0.3, 0.0, 0.4], [0.5, 0.4, 0.0, 0.4], x, SQRT3), np.zeros(4)
    )


def test_everything_in_the_box_certified():
    x = np.array([[0.0, 1.0, 0.5, 0.25], [0.3, 0.3, 0.9, 1.0]])
    far = reach(x).sum(axis=1)  # 3.25 and 3.3
    # λ = 3: (1 − 1/6)²·(1 − 0.5/6)·(1 − 0.75/6) > 1/2, all of the box is certified: Σ m_i
    np.testing.assert_allclose(box.box_radius(1.0, 0.0, x, 3.0), far, rtol=1e-15)
    # λ = 1000: the union bound's λ·(pa − pb) is larger still, and just as true
    radius = box.box_radius([1.0, 0.9], [0.0, 0.05], x, 1000.0)
    np.testing.assert_allclose(radius, [1000.0, 850.0], rtol=1e-15)
    assert box.worst_tv(10.0, x, 1000.0) == pytest.approx(box.worst_tv(far, x, 1000.0))


def test_full_confidence_and_extreme_lambda():
    x = np.array([[0.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    # λ tiny: the caps are 2λ and the first coordinate alone can reach TV = 1
    np.testing.assert_allclose(box.box_radius(1.0, 0.0, x, 1e-8), [1e-8, 1e-8], rtol=1e-12)
    np.testing.assert_array_equal(box.worst_tv(2e-8, x, 1e-8), [1.0, 1.0])
    # 2λ = 1: a pixel at 0 or 1 moved across the box changes cell surely
    np.testing.assert_array_equal(box.worst_tv(1.0, x, 0.5), [1.0, 0.75])
    # TV never reaches 1/2 at λ = 3 for x[0]: (1 − 1/6)³ > 1/2, and λ·1 = 3 = Σ m_i
    np.testing.assert_allclose(box.box_radius(1.0, 0.0, x, 3.0), [3.0, 3.0], rtol=1e-15)


def test_vectorised_over_points_as_one_at_a_time():
    rng = np.random.default_rng(12)
    x = random_points(rng, 12, 3 * 4 * 4).reshape(12, 3, 4, 4)
    pa, pb = random_bounds(rng, 12)
    eps = rng.uniform(0, 5, 12)
    for lam in (0.1, SQRT3):
        radii, worst = box.box_radius(pa, pb, x, lam), box.worst_tv(eps, x, lam)
        for i in range(12):
            assert box.box_radius(pa[i], pb[i], x[i : i + 1], lam)[0] == radii[i]
            assert box.worst_tv(eps[i], x[i : i + 1], lam)[0] == worst[i]


def test_caps_sorted_and_capped():
    x = np.array([[[0.2, 1.0], [0.5, 0.7]]])
    np.testing.assert_array_equal(box.caps(x, 1.0), [[1.0, 0.8, 0.7, 0.5]])
    np.testing.assert_array_equal(box.caps(x, 0.3), [[0.6, 0.6, 0.6, 0.5]])


def test_refuses_inputs_outside_the_box_and_bad_lambda():
    with pytest.raises(L1CertError, match=r"\[0, 1\]"):
        box.caps([[0.5, 1.2]], 1.0)
    with pytest.raises(L1CertError, match=r"\[0, 1\]"):
        box.box_radius(0.9, 0.1, [[np.nan]], 1.0)
    with pytest.raises(L1CertError, match="lam"):
        box.box_radius(0.9, 0.1, [[0.5]], 0.0)
    with pytest.raises(L1CertError, match="eps"):
        box.worst_tv(-1.0, [[0.5]], 1.0)


def test_imagenet_sized_inputs():
    """d = 150 528: the product of the factors underflows in linear space, not in log space."""
    rng = np.random.default_rng(13)
    x = rng.random((4, 3, 224, 224))
    x[1] = 0.0
    pa, pb = np.array([0.99, 0.99, 0.6, 0.5 + 1e-12]), np.array([0.005, 0.005, 0.3, 0.5 - 1e-12])
    for sigma in (0.25, 1.0, 4.0):
        lam = SQRT3 * sigma
        start = time.perf_counter()
        radius = box.box_radius(pa, pb, x, lam)
        assert time.perf_counter() - start < 2.0
        plain = plain_radius(pa, pb, lam)
        assert np.all(np.isfinite(radius)) and np.all(radius >= plain * (1 - 1e-12))
        assert radius[3] == pytest.approx(plain[3], rel=1e-12)  # gap 2e-12: the plain bound
        np.testing.assert_allclose(box.worst_tv(radius, x, lam), (pa - pb) / 2, rtol=1e-9)
    # a black image moved to white: (1 − 1/(2λ))^d underflows, TV* is 1 without NaN
    assert box.worst_tv(reach(x).sum(1), x, lam)[1] == 1.0


# --- the box bounds in certify, resume and the report --------------------------------------------


@pytest.fixture(scope="module")
def uniform_run(tmp_path_factory):
    """A digits model trained briefly under uniform noise at σ = 1 (where the box binds) and
    certified on 30 test points."""
    import torch

    from l1cert.certify import certify_to_tsv
    from l1cert.config import DataConfig, TrainConfig
    from l1cert.train import train

    folder = tmp_path_factory.mktemp("uniform")
    torch.manual_seed(0)
    config = TrainConfig(arch="digits_mlp", noise="uniform", sigma=1.0, epochs=3, threads=1)
    train(config, folder / "model", DataConfig(dataset="digits"), device="cpu")
    tsv = certify_to_tsv(folder / "model" / "model.pt", folder / "run.tsv", n0=50, n=2000,
                         batch=500, skip=12, progress=False)  # fmt: skip
    return folder, tsv


def test_certify_writes_the_box_radius_of_each_point(uniform_run):
    """Each row's radius_uniform_box is the box radius of its own test point for the joint
    p̲A (at α/2) and p̄B its counts give, never below the union bound of that pair."""
    from conftest import read_table

    from l1cert import sequential
    from l1cert.data import load_split

    _, tsv = uniform_run
    rows = read_table(tsv)
    test = load_split("digits", "test")
    lam = float(rows[0]["scale"])
    count, count_b = (np.array([int(r[c]) for r in rows]) for c in ("count", "count_b"))
    ends = sequential.ends(count, count_b, 0, [2000], 0.001, 10, project=False)
    points = np.stack([test[int(r["idx"])][0].numpy().ravel() for r in rows]).astype(float)
    expected = box.box_radius(ends.pa_joint, ends.pb_upper, points, lam)
    found = np.array([float(r["radius_uniform_box"]) for r in rows])
    assert found == pytest.approx(expected, rel=1e-9, abs=1e-12)
    union = np.where(ends.pa_joint > ends.pb_upper, lam * (ends.pa_joint - ends.pb_upper), 0)
    assert np.all(found >= union * (1 - 1e-9) - 1e-12) and np.any(found > 0)


def _tampered(folder: Path, tsv: Path, factor: float, where: Path) -> Path:
    """The certify file with the first certified row's box radius scaled, resealed."""
    from l1cert import certify_format as fmt

    lines = tsv.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    at = header.index("radius_uniform_box")
    for i, line in enumerate(lines[1:], start=1):
        fields = line.rstrip("\n").split("\t")
        if float(fields[at]) > 0:
            fields[at] = f"{float(fields[at]) * factor:.10g}"
            lines[i] = "\t".join(fields) + "\n"
            break
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text("".join(lines))
    fmt.write_sidecar(where, fmt.seal(where, fmt.read_sidecar(tsv), len(lines) - 1))
    return where


def test_resume_recomputes_the_box_radius_and_the_report_brackets_it(uniform_run):
    """A box radius nudged within what its counts allow: resume, which has the test points,
    refuses it; the report, which has not, reads it and says the column was only bracketed.
    Pushed past the bracket, the report refuses it too."""

    from click.testing import CliRunner

    from l1cert.certify import certify_to_tsv
    from l1cert.cli import main
    from l1cert.utils import L1CertError

    folder, tsv = uniform_run
    nudged = _tampered(folder, tsv, 1.0000001, folder / "nudged" / "run.tsv")
    cut_short(nudged, folder / "resumed" / "run.tsv", rows=len(read_table(nudged)))
    with pytest.raises(L1CertError, match="radius_uniform_box .* is not what its counts"):
        certify_to_tsv(folder / "model" / "model.pt", folder / "resumed" / "run.tsv", n0=50,
                       n=2000, batch=500, skip=12, progress=False)  # fmt: skip

    report = CliRunner().invoke(main, ["report", str(nudged), "--out-dir", str(folder / "r1")])
    assert report.exit_code == 0, report.output
    assert "uniform_box within bounds only: it needs the test points" in report.stderr
    caption = (folder / "r1" / "captions" / "certified-accuracy.rst").read_text()
    assert (
        "Uniform, box (Voráček & Hein): radii checked to lie within what their counts allow"
        in caption
    )

    far = _tampered(folder, tsv, 1000.0, folder / "far" / "run.tsv")
    report = CliRunner().invoke(main, ["report", str(far), "--out-dir", str(folder / "r2")])
    assert report.exit_code == 2 and "is not within what its counts allow in the box" in (
        report.stderr
    )
