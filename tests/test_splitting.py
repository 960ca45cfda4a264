import itertools
import math

import numpy as np
import pytest
import torch
from scipy import stats

from l1cert.grid import half_width, num_offsets
from l1cert.noise import DSSN
from l1cert.smoothing import Smooth
from l1cert.splitting import (
    check_on_grid,
    dssn_certify,
    dssn_offsets,
    make_template,
    random_offsets,
    split,
)
from l1cert.utils import L1CertError

# ---- half_width, num_offsets ----------------------------------------------------------------


@pytest.mark.parametrize(
    "grid, expected",
    [(16, [6, 13, 27, 55]), (255, [106, 220, 441, 883])],
)
def test_offsets_per_sigma_are_floor_of_2_sqrt3_sigma_q(grid, expected):
    for sigma, L in zip([0.12, 0.25, 0.5, 1.0], expected, strict=True):
        lam = half_width(sigma, grid)
        assert num_offsets(lam, grid) == L == math.floor(2 * math.sqrt(3) * sigma * grid)
        assert lam <= math.sqrt(3) * sigma < lam + 1 / (2 * grid)  # rounded down, one step at most


def test_an_exact_multiple_is_not_lost_to_float_error():
    sigma = 57 / (2 * math.sqrt(3) * 16)
    assert math.floor(2 * math.sqrt(3) * sigma * 16) == 56  # the naive floor drops a step
    assert num_offsets(half_width(sigma, 16), 16) == 57


@pytest.mark.parametrize(
    "sigma, grid", [(0.01, 16), (0.0, 16), (-1.0, 16), (math.nan, 16), (math.inf, 16)]
)
def test_half_width_refuses_bad_sigma_or_fewer_than_two_offsets(sigma, grid):
    with pytest.raises(L1CertError, match="sigma.*q=16"):
        half_width(sigma, grid)


@pytest.mark.parametrize("grid", [0, -3, 1.5, True, "16"])
def test_half_width_refuses_a_bad_grid(grid):
    with pytest.raises(L1CertError, match="grid q"):
        half_width(0.5, grid)


def test_num_offsets_refuses_a_lambda_off_the_half_step_grid():
    with pytest.raises(L1CertError, match="integer"):
        num_offsets(0.3, 16)


# ---- split ----------------------------------------------------------------------------------


def _reference_split(x: float, offset: float, lam: float) -> float:
    """The clipped middle of the cell (cut, cut + 2λ] that holds x, found by walking the cuts."""
    cut = offset - 2 * lam * math.ceil(offset / (2 * lam) + 2)  # a cut well left of 0
    while not cut < x <= cut + 2 * lam:
        cut += 2 * lam
    return (max(cut, 0.0) + min(cut + 2 * lam, 1.0)) / 2


def test_split_takes_the_middle_of_the_clipped_cell_and_cuts_belong_left():
    # dyadic numbers, so the cuts 0.125, 0.375, 0.625, 0.875 are exact
    xs = torch.arange(1025, dtype=torch.float64) / 1024
    out = split(xs, torch.tensor(0.125, dtype=torch.float64), 0.125)
    expected = [_reference_split(float(x), 0.125, 0.125) for x in xs]
    assert out.tolist() == expected
    assert sorted(set(expected)) == [0.0625, 0.25, 0.5, 0.75, 0.9375]
    assert out[128].item() == 0.0625 and out[129].item() == 0.25  # x = 0.125 sits on a cut


def test_split_lies_in_the_unit_box_and_is_piecewise_constant():
    gen = torch.Generator().manual_seed(3)
    for lam in [0.05, 0.3, 0.7, 2.0]:
        x = torch.rand(2000, generator=gen, dtype=torch.float64)
        offsets = random_offsets((5, 2000), lam, gen, dtype=torch.float64)
        out = split(x, offsets, lam)
        assert out.shape == (5, 2000) and out.min() >= 0 and out.max() <= 1
        # moving x by a hair changes the output only where a cut lies in between
        eps = 1e-9
        nudged = split(x + eps, offsets, lam)
        cut_between = torch.remainder(x - offsets, 2 * lam) >= 2 * lam - eps
        assert torch.equal(out != nudged, cut_between)
        assert (~cut_between).sum() > 9900


# ---- SSN: the union bound -------------------------------------------------------------------


def test_random_splits_of_close_points_differ_with_probability_at_most_l1_over_2lam():
    lam, n = 0.4, 40_000
    x = torch.tensor([0.2, 0.5, 0.7, 0.31, 0.9, 0.05, 0.6, 0.44], dtype=torch.float64)
    delta = torch.tensor([0.01, -0.02, 0.0, 0.05, 0.0, 0.0, -0.03, 0.1], dtype=torch.float64)
    offsets = random_offsets((n, 8), lam, torch.Generator().manual_seed(0), dtype=torch.float64)
    differs = split(x, offsets, lam) != split(x + delta, offsets, lam)

    per_coordinate = differs.double().mean(0)
    expected = (delta.abs() / (2 * lam)).clamp(max=1)
    se = (expected * (1 - expected) / n).sqrt()
    assert torch.all((per_coordinate - expected).abs() <= 4 * se + 1e-12)

    bound = delta.abs().sum().item() / (2 * lam)
    p_any = differs.any(1).double().mean().item()
    assert p_any <= bound + 3 * math.sqrt(bound * (1 - bound) / n)
    assert p_any > 0.8 * bound  # the union bound is nearly tight for small, spread δ


def test_cells_wider_than_the_gap_always_separate():
    lam = 0.4  # cells of width 0.8 < 0.9
    offsets = random_offsets((10_000,), lam, torch.Generator().manual_seed(1))
    assert torch.all(
        split(torch.tensor(0.05), offsets, lam) != split(torch.tensor(0.95), offsets, lam)
    )


# ---- DSSN offsets and template --------------------------------------------------------------


def test_template_is_reproducible_from_the_seed_on_the_grid():
    lam = half_width(0.25, 16)  # L = 13
    v = make_template((3, 4, 4), lam, 16, seed=0)
    assert v.dtype == torch.float32 and v.device.type == "cpu" and v.is_contiguous()
    assert torch.equal(v, make_template((3, 4, 4), lam, 16, seed=0))
    assert not torch.equal(v, make_template((3, 4, 4), lam, 16, seed=1))
    steps = v * 16
    assert torch.equal(steps, steps.round()) and steps.min() >= 0 and steps.max() <= 12
    # pinned: a change in torch's CPU generator would silently change every model's template
    assert (v.flatten()[:8] * 16).tolist() == [3, 2, 1, 3, 12, 4, 3, 12]


def test_each_dssn_offset_is_uniform_over_the_cells_of_width_one_step():
    grid = 16
    lam = half_width(0.25, grid)
    L = num_offsets(lam, grid)
    cells = np.concatenate(
        [
            (dssn_offsets(make_template((10,), lam, grid, seed), lam, grid)[5] * grid - 0.5).numpy()
            for seed in range(300)
        ]
    )
    assert np.array_equal(cells, np.round(cells))  # half a step off the grid, exactly
    observed = np.bincount(cells.astype(int), minlength=L)
    assert observed.size == L
    # For on-grid inputs only the cell of width 1/q that holds the offset matters, and
    # U[0, 2λ) gives each of the L cells probability 1/L.
    assert stats.chisquare(observed).pvalue > 1e-3


def test_offsets_of_one_coordinate_are_spread_one_step_apart():
    grid = 255
    lam = half_width(0.5, grid)
    L = num_offsets(lam, grid)
    offsets = dssn_offsets(make_template((50,), lam, grid, seed=7), lam, grid)
    assert offsets.shape == (L, 50) and offsets.dtype == torch.float32
    midpoints = (torch.arange(L, dtype=torch.float64) + 0.5) / grid
    for i in range(50):
        assert torch.equal(offsets[:, i].sort().values, midpoints.float())
    # successive j step by exactly 1/q mod 2λ
    gaps = torch.remainder(offsets.double().diff(dim=0) * grid, L)
    assert torch.allclose(gaps, torch.ones_like(gaps), atol=1e-4)


def test_a_template_off_the_grid_is_refused():
    lam = half_width(0.25, 16)
    with pytest.raises(L1CertError, match="template"):
        dssn_offsets(torch.rand(5) * 2 * lam, lam, 16)


# ---- on-grid inputs -------------------------------------------------------------------------


def test_check_on_grid_accepts_grid_values_and_refuses_others():
    check_on_grid(torch.arange(17, dtype=torch.float32) / 16, 16)
    check_on_grid(torch.arange(256, dtype=torch.uint8).float() / 255, 255)
    with pytest.raises(L1CertError, match=r"^test point idx 17 is not on the grid k/16.*0\.3"):
        check_on_grid(torch.tensor([0.25, 0.3]), 16, what="test point idx 17")
    for outside in [17 / 16, -1 / 16]:
        with pytest.raises(L1CertError, match="input is not on the grid"):
            check_on_grid(torch.tensor([0.5, outside]), 16)


# ---- vote counting --------------------------------------------------------------------------


def _linear_model(inputs: int, classes: int, seed: int):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(inputs, classes))


def _dssn_smooth(template, L: int, grid: int, classes: int, model=None) -> Smooth:
    """A Smooth under the DSSN noise of `template` whose λ gives L copies on this grid (σ
    chosen so that half_width rounds it to L/(2q))."""
    noise = DSSN(L / (2 * math.sqrt(3) * grid), grid, template)
    assert noise.copies == L and noise.scale == L / (2 * grid)
    return Smooth(model or torch.nn.Identity(), classes, noise)


def _naive_counts(classify, xs, template, lam, grid, num_classes):
    """One forward pass per point and offset."""
    offsets = dssn_offsets(template, lam, grid)
    counts = torch.zeros(len(xs), num_classes, dtype=torch.long)
    for p, x in enumerate(xs):
        for s in offsets:
            counts[p, classify(split(x, s, lam)[None]).item()] += 1
    return counts


def test_packed_vote_counts_equal_one_offset_at_a_time():
    grid, classes = 16, 5
    lam = half_width(0.25, grid)
    L = num_offsets(lam, grid)
    template = make_template((1, 4, 4), lam, grid, seed=2)
    model = _linear_model(16, classes, seed=0)

    def classify(batch):
        with torch.inference_mode():
            return model(batch).argmax(1)

    xs = torch.randint(0, grid + 1, (6, 1, 4, 4), generator=torch.Generator().manual_seed(5)) / grid
    naive = _naive_counts(classify, xs, template, lam, grid, classes)
    assert torch.all(naive.sum(1) == L) and (naive > 0).sum() > len(xs)  # votes do split
    expected = dssn_certify(naive, grid)
    smooth = _dssn_smooth(template, L, grid, classes, model)
    for batch_size in [1, 7, L, 3 * L + 1]:
        with torch.inference_mode():
            counts = smooth._count_exact(smooth._classifier(batch_size), xs, batch_size)
        assert counts.dtype == torch.long and torch.equal(counts, naive)
        # and what certify_exact makes of them, for points in shuffled order
        order = [4, 0, 5, 2, 1, 3]
        certified = dict(smooth.certify_exact([(10 + i, xs[i]) for i in order], batch_size))
        assert list(certified) == [10 + i for i in order]
        for i in range(len(xs)):
            cert = certified[10 + i]
            assert (cert.prediction, cert.count, cert.count_b, cert.runner_up, cert.n) == (
                expected.predict[i], expected.count[i], expected.count_b[i],
                expected.runner_up[i], L,
            )  # fmt: skip
            assert cert.radius == expected.radius[i] and cert.exact


def test_exact_counting_refuses_off_grid_points_and_unknown_labels():
    lam = half_width(0.25, 16)
    L = num_offsets(lam, 16)
    template = make_template((4,), lam, 16, seed=0)
    xs = torch.tensor([[0.0, 0.25, 0.5, 1.0], [0.0, 0.3, 0.5, 1.0]])
    smooth = _dssn_smooth(template, L, 16, 3, torch.nn.Linear(4, 3))
    with pytest.raises(L1CertError, match="^test point idx 8 is not on the grid"):
        list(smooth.certify_exact([(7, xs[0]), (8, xs[1])], 8))
    with pytest.raises(L1CertError, match="labels outside"):
        smooth._count_exact(lambda b: torch.full((len(b),), 3), xs[:1], 8)


# ---- the certificate ------------------------------------------------------------------------


def _compositions(total: int, parts: int):
    for cuts in itertools.combinations(range(total + parts - 1), parts - 1):
        bounds = (-1, *cuts, total + parts - 1)
        yield [bounds[i + 1] - bounds[i] - 1 for i in range(parts)]


def _worst_case_radius(counts: list[int]) -> int:
    """Largest m such that no recount reachable by changing m votes has another argmax."""
    a = int(np.argmax(counts))
    others = [np.array(c) for c in _compositions(sum(counts), len(counts))]
    m = 0
    while all(int(np.argmax(c)) == a for c in others if np.maximum(c - counts, 0).sum() <= m + 1):
        m += 1
        if m > sum(counts):
            break
    return m


@pytest.mark.parametrize("classes", [2, 3])
def test_radius_matches_the_worst_case_over_every_small_count_vector(classes):
    for total in range(1, 8):
        vectors = list(_compositions(total, classes))
        cert = dssn_certify(np.array(vectors), grid=1)
        for counts, radius in zip(vectors, cert.radius, strict=True):
            assert radius == _worst_case_radius(counts), counts


def test_tie_rule_and_runner_up():
    cert = dssn_certify(np.array([[5, 3], [3, 5], [6, 3], [3, 6]]), 4)
    assert cert.predict.tolist() == [0, 1, 0, 1]
    # [5,3] → [4,4] still goes to 0; [3,5] → [4,4] goes to 0 = B, so no step is certified
    assert (cert.radius * 4).tolist() == [1, 0, 1, 1]
    assert cert.count.tolist() == [5, 5, 6, 6] and cert.count_b.tolist() == [3, 3, 3, 3]
    # N = [4, 0, 5, 4]: class 0 binds (a tie would go to it), not the equal-count class 3
    cert = dssn_certify(torch.tensor([[4, 0, 5, 4]]), 4)
    assert (cert.predict[0], cert.runner_up[0], cert.count_b[0], cert.radius[0]) == (2, 0, 4, 0)


def test_one_class_is_refused():
    with pytest.raises(L1CertError, match="classes"):
        dssn_certify(np.array([[7]]), 16)


def _grid_points(dims: int, grid: int) -> torch.Tensor:
    return torch.cartesian_prod(*[torch.arange(grid + 1)] * dims).float() / grid


@pytest.mark.parametrize("L", [2, 3, 5])
def test_radius_is_sound_and_tight_by_brute_force_over_every_grid_point(L):
    grid, dims = 4, 4
    lam = L / (2 * grid)
    points = _grid_points(dims, grid)  # all 625 inputs
    steps = (points * grid).round().long()
    distance = (steps[:, None] - steps[None]).abs().sum(-1)  # ℓ1 in grid steps
    weights = torch.tensor(np.random.default_rng(0).normal(size=(dims, 3)), dtype=torch.float32)
    classifiers = {
        "linear": lambda b: (b @ weights + torch.tensor([0.1, -0.2, 0.0])).argmax(1),
        "sum threshold": lambda b: (b.sum(1) > 1.5).long() + (b.sum(1) > 2.5).long(),
    }
    for (name, classify), seed in itertools.product(classifiers.items(), [0, 1]):
        template = make_template((dims,), lam, grid, seed)
        counts = _dssn_smooth(template, L, grid, 3)._count_exact(classify, points, 256)
        assert torch.all(counts.sum(1) == L)
        predict = counts.argmax(1)
        m = torch.tensor(dssn_certify(counts, grid).radius * grid).round().long()
        changed = predict[None] != predict[:, None]
        assert not torch.any(changed & (distance <= m[:, None])), (name, seed)
        # tight: one more step flips some point's prediction
        assert torch.any(changed & (distance == m[:, None] + 1)), (name, seed)


def test_the_two_dssn_radius_formulas_agree():
    """`dssn_certify` (certify: min over every rival class) and `bounds.dssn`
    (re-derivation: from N_A, N_B, A, B alone) are kept apart on purpose; on random vote
    tables with many ties they give the same radius for the runner-up the first names."""
    from l1cert import bounds

    rng = np.random.default_rng(0)
    for classes, grid in ((2, 1), (3, 16), (10, 255)):
        counts = rng.integers(0, 6, size=(2000, classes))  # small counts: ties everywhere
        cert = dssn_certify(counts, grid)
        rederived = bounds.dssn(cert.count, cert.count_b, cert.predict, cert.runner_up, grid)
        np.testing.assert_array_equal(rederived, cert.radius)
        assert (cert.runner_up != cert.predict).all()
