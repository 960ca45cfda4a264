import math

import numpy as np
import pytest
import torch
from torch import nn

from l1cert import certificates
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
    cert = smooth.certify(x, 100, 20_000, 0.001, 4096, torch.Generator().manual_seed(0))
    p = laplace_p(margin, scale)
    exact_radius = -scale * math.log(2 * (1 - p))
    assert exact_radius == pytest.approx(margin)
    assert cert.prediction == 1
    assert abs(cert.count / 20_000 - p) < 4 * math.sqrt(p * (1 - p) / 20_000)
    assert cert.pa_lower == pytest.approx(float(lower_confidence_bound(cert.count, 20_000, 0.001)))
    assert cert.pa_lower < p  # sound
    assert 0.8 * exact_radius < cert.radius < exact_radius  # and close to tight
    assert cert.radius == cert.radii["teng"]
    assert cert.radii["lecuyer"] < cert.radii["teng"]
    assert cert.count_b == 20_000 - cert.count  # binary: the runner-up takes the rest
    # teng_multiclass: p̲A at alpha/2, p̄B capped at 1 - p̲A, so in the binary case it is teng
    pa_joint = float(lower_confidence_bound(cert.count, 20_000, 0.0005))
    assert cert.pb_upper <= 1 - pa_joint + 1e-12
    assert cert.radii["teng_multiclass"] == pytest.approx(
        float(certificates.teng(pa_joint, scale)), rel=1e-9
    )


@pytest.mark.parametrize("noise", ["gaussian", "uniform"])
def test_certify_half_space_other_noises(noise):
    sigma, margin = 0.5, 0.3
    smooth = Smooth(HalfSpace(0.0), 2, noise, sigma)
    x = torch.tensor([margin, 0.0, 0.0])
    cert = smooth.certify(x, 100, 20_000, 0.001, 5000, torch.Generator().manual_seed(1))
    assert cert.prediction == 1
    assert list(cert.radii) == list(smooth.noise.bounds)
    assert 0.75 * margin < cert.radius < margin  # exact radius = margin for both


def test_abstain_at_the_boundary():
    smooth = Smooth(HalfSpace(0.0), 2, "laplace", 0.5)
    cert = smooth.certify(torch.zeros(4), 100, 2000, 0.001, 500, torch.Generator().manual_seed(2))
    assert cert.prediction == ABSTAIN
    assert set(cert.radii.values()) == {0.0}
    gen = torch.Generator().manual_seed(3)
    assert smooth.predict(torch.zeros(4), 2000, 0.001, 500, gen) == ABSTAIN
    x = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert smooth.predict(x, 200, 0.001, 64, torch.Generator().manual_seed(3)) == 1


def test_multiclass_runner_up_bound():
    """Three classes by the sign pattern of (x1, x2): the runner-up bound is Bonferroni-split."""

    class Thirds(nn.Module):
        def forward(self, x):
            return torch.stack([x[:, 0], x[:, 1], torch.zeros_like(x[:, 0]) + 0.5], dim=1)

    smooth = Smooth(Thirds(), 3, "laplace", 0.5)
    x = torch.tensor([2.0, 0.0])
    n = 10_000
    cert = smooth.certify(x, 50, n, 0.01, 1000, torch.Generator().manual_seed(4))
    assert cert.prediction == 0
    assert 0 < cert.count_b < n - cert.count  # a real multiclass split
    from l1cert.stats import upper_confidence_bound

    expected = min(
        float(upper_confidence_bound(cert.count_b, n, 0.01 / 4)),
        1 - float(lower_confidence_bound(cert.count, n, 0.005)),
    )
    assert cert.pb_upper == pytest.approx(expected)


def test_same_generator_same_certificate_and_counts_on_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    smooth = Smooth(model, 5, "laplace", 0.25)
    x = torch.rand(3, 8, 8)
    a = smooth.certify(x, 20, 300, 0.001, 128, torch.Generator().manual_seed(5))
    b = smooth.certify(x, 20, 300, 0.001, 128, torch.Generator().manual_seed(5))
    assert a == b
    # counting equals a plain per-draw loop over the same noise
    counts = smooth._count(x, 300, 128, torch.Generator().manual_seed(6))
    assert counts.sum() == 300
    gen = torch.Generator().manual_seed(6)
    reference = np.zeros(5, dtype=int)
    with torch.no_grad():
        for size in (128, 128, 44):
            batch = torch.empty((size, 3, 8, 8), memory_format=torch.channels_last)
            smooth.noise.sample_(batch, gen).add_(x)
            reference += np.bincount(model(batch).argmax(1).numpy(), minlength=5)
    assert np.array_equal(counts, reference)
