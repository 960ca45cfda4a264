import math

import numpy as np
import pytest
import torch
from torch import nn

from l1cert import bounds
from l1cert.points import BLOCK, ESTIMATION, Draws, point_seed
from l1cert.smoothing import ABSTAIN, Smooth
from l1cert.stats import lower_confidence_bound

torch.set_num_threads(1)


class HalfSpace(nn.Module):
    """f(x) = 1[x1 > t] on flat inputs: its smoothed probability is known exactly."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        margin = x[:, 0] - self.threshold
        return torch.stack([-margin, margin], dim=1)


def laplace_p(margin, scale):
    return 1 - 0.5 * math.exp(-margin / scale)


def test_certify_half_space_under_laplace():
    sigma, t, margin = 0.5, 0.2, 0.4
    smooth = Smooth(HalfSpace(t), 2, "laplace", sigma)
    scale = smooth.noise.scale
    x = torch.zeros(6)
    x[0] = t + margin
    cert = smooth.certify(x, 100, 20_000, 0.001, 4096, seed=0)
    p = laplace_p(margin, scale)
    exact_radius = -scale * math.log(2 * (1 - p))
    assert exact_radius == pytest.approx(margin)
    assert cert.prediction == 1
    assert abs(cert.count / 20_000 - p) < 4 * math.sqrt(p * (1 - p) / 20_000)
    assert cert.pa_lower == pytest.approx(float(lower_confidence_bound(cert.count, 20_000, 0.001)))
    assert cert.pa_lower < p  # sound
    assert 0.8 * exact_radius < cert.radius < exact_radius  # and close to tight
    assert cert.radius == cert.bound_radii["teng"]
    assert cert.bound_radii["lecuyer"] < cert.bound_radii["teng"]
    assert cert.count_b == 20_000 - cert.count  # binary: the runner-up takes the rest
    # two classes: p̄B = 1 − p̲A at the full level (no split), so Theorem 1 is Theorem 2
    assert cert.pb_upper == pytest.approx(1 - cert.pa_lower)
    assert cert.bound_radii["teng_multiclass"] == pytest.approx(cert.bound_radii["teng"], rel=1e-9)


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_certify_half_space_other_noises(noise):
    sigma, margin = 0.5, 0.3
    smooth = Smooth(HalfSpace(0.0), 2, noise, sigma)
    x = torch.tensor([margin, 0.0, 0.0])
    cert = smooth.certify(x, 100, 20_000, 0.001, 5000, seed=1)
    assert cert.prediction == 1
    assert list(cert.bound_radii) == list(smooth.noise.bounds)
    assert 0.75 * margin < cert.radius < margin  # exact radius = margin for both


def test_abstain_at_the_boundary():
    smooth = Smooth(HalfSpace(0.0), 2, "laplace", 0.5)
    cert = smooth.certify(torch.zeros(4), 100, 2000, 0.001, 500, seed=2)
    assert cert.prediction == ABSTAIN
    assert set(cert.bound_radii.values()) == {0.0}
    assert smooth.predict(torch.zeros(4), 2000, 0.001, 500, seed=3) == ABSTAIN
    x = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert smooth.predict(x, 200, 0.001, 64, seed=3) == 1


def test_multiclass_runner_up_bound():
    """Three classes by the sign pattern of (x1, x2): the runner-up bound is Bonferroni-split."""

    class Thirds(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0], x[:, 1], torch.zeros_like(x[:, 0]) + 0.5], dim=1)

    smooth = Smooth(Thirds(), 3, "laplace", 0.5)
    x = torch.tensor([2.0, 0.0])
    n = 10_000
    cert = smooth.certify(x, 50, n, 0.01, 1000, seed=4)
    assert cert.prediction == 0
    assert 0 < cert.count_b < n - cert.count  # a real multiclass split
    from l1cert.stats import upper_confidence_bound

    expected = min(
        float(upper_confidence_bound(cert.count_b, n, 0.01 / 4)),
        1 - float(lower_confidence_bound(cert.count, n, 0.005)),
    )
    assert cert.pb_upper == pytest.approx(expected)


def test_same_seed_same_certificate_and_counts_on_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    smooth = Smooth(model, 5, "laplace", 0.25)
    x = torch.rand(3, 8, 8)
    a = smooth.certify(x, 20, 300, 0.001, 128, seed=5)
    b = smooth.certify(x, 20, 300, 0.001, 128, seed=5)
    assert a == b
    # counting equals a plain loop drawing each block of BLOCK draws from its own seed
    draws = Draws(point_seed(6, 0), torch.device("cpu"))
    counts = smooth._count(x, 300, 128, draws, ESTIMATION)
    assert counts.sum() == 300
    gen, reference = torch.Generator(), np.zeros(5, dtype=int)
    with torch.no_grad():
        for block in range(3):
            gen.manual_seed(draws.block_seed(ESTIMATION, block))
            batch = torch.empty((BLOCK, 3, 8, 8), memory_format=torch.channels_last)
            smooth.noise.sample_(batch, gen).add_(x)
            reference += np.bincount(model(batch).argmax(1).numpy(), minlength=5)
    assert np.array_equal(counts, reference)


@pytest.mark.parametrize("noise", ["laplace", "gaussian", "uniform", "split"])
def test_the_batch_size_changes_no_certificate(noise):
    """A point's draws come in blocks with seeds of their own: cut into batches of 1000, 128
    or 37 (splitting blocks), fixed and sequential certificates are the same."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    smooth = Smooth(model, 5, noise, 0.5)
    points = [
        (i, torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i))) for i in range(4)
    ]
    fixed = {
        b: dict(smooth.certify_fixed(points, 50, 430, 0.01, b, seed=7)) for b in (1000, 128, 37)
    }
    assert fixed[1000] == fixed[128] == fixed[37]
    radii = [0, 0.1, 0.3]
    seq = {b: dict(smooth.certify_sequential(points, 50, 800, 0.01, b, radii, seed=7))
           for b in (1000, 37)}  # fmt: skip
    assert seq[1000] == seq[37]


class Split(nn.Module):
    """Classes 0, 1, 2 with probabilities 45/30/25 % under Laplace noise around x = 0: the
    class is read off the noise's quantile in the first coordinate."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        e = x[:, 0]
        u = 0.5 + 0.5 * torch.sign(e) * (1 - torch.exp(-e.abs() / self.scale))  # Laplace CDF
        labels = (u > 0.45).long() + (u > 0.75).long()
        return nn.functional.one_hot(labels, 3).float()


def test_theorem1_certifies_where_the_primary_bound_abstains():
    smooth = Smooth(Split(0.5 / math.sqrt(2)), 3, "laplace", 0.5)
    cert = smooth.certify(torch.zeros(4), 100, 100_000, 0.001, 10_000, seed=1)
    assert cert.prediction == ABSTAIN and cert.top_class == 0 and cert.pa_lower < 0.5
    assert cert.radius == 0 and cert.bound_radii["teng"] == 0 and cert.bound_radii["lecuyer"] == 0
    exact = bounds.teng_multiclass(0.45, 0.30, smooth.noise.scale)  # 0.0717
    assert 0.5 * exact < cert.bound_radii["teng_multiclass"] < exact
    points = [(i, torch.zeros(4)) for i in range(3)]
    for _, seq in smooth.certify_sequential(points, 100, 100_000, 0.001, 10_000, [0, 0.05]):
        assert seq.prediction == ABSTAIN and 0.05 < seq.bound_radii["teng_multiclass"] < exact


def test_sequential_radius_is_sound_and_stops_early():
    """Half-spaces at known margins: no sequential radius exceeds the exact tight one."""
    sigma, t, cap = 0.5, 0.2, 50_000
    smooth = Smooth(HalfSpace(t), 2, "laplace", sigma)
    scale = smooth.noise.scale
    margins = np.linspace(-0.3, 1.2, 40)
    points = []
    for i, margin in enumerate(margins):
        x = torch.zeros(6)
        x[0] = t + margin
        points.append((i, x))
    grid = [0, 0.1, 0.25, 0.5, 0.75, 1.0]
    certs = dict(smooth.certify_sequential(points, 100, cap, 0.001, 1000, grid))
    assert sorted(certs) == list(range(40))
    for i, margin in enumerate(margins):
        cert = certs[i]  # the side of the threshold x lies on wins, with p from |margin|
        exact = -scale * math.log(2 * (1 - laplace_p(abs(margin), scale)))
        assert cert.prediction in (int(margin > 0), ABSTAIN)
        assert cert.radius <= exact + 1e-12
    draws = [c.n for c in certs.values()]
    assert np.mean(draws) < cap / 3 and min(draws) <= 1600  # most stop long before the cap
