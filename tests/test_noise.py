import math

import numpy as np
import pytest
import torch
from scipy import stats

from l1cert.noise import NOISES, Gaussian, Laplace, Uniform, make_noise
from l1cert.utils import L1CertError

REFERENCE = {  # scipy's distribution for each noise, parametrised by the scale
    "gaussian": lambda s: stats.norm(scale=s),
    "laplace": lambda s: stats.laplace(scale=s),
    "uniform": lambda s: stats.uniform(loc=-s, scale=2 * s),
}


def test_scales_match_the_standard_deviation():
    assert make_noise("gaussian", 0.5).scale == 0.5
    assert make_noise("laplace", 0.5).scale == pytest.approx(0.5 / math.sqrt(2))
    assert make_noise("uniform", 0.5).scale == pytest.approx(0.5 * math.sqrt(3))
    assert isinstance(make_noise("laplace", 1.0), Laplace)


@pytest.mark.parametrize("name", sorted(n for n, c in NOISES.items() if c.additive))
def test_samples_follow_the_distribution(name):
    sigma = 0.7
    noise = make_noise(name, sigma)
    out = torch.empty(200_000)
    same = noise.sample_(out, torch.Generator().manual_seed(1))
    assert same.data_ptr() == out.data_ptr()  # drawn in place
    draws = out.numpy().astype(np.float64)
    assert draws.std() == pytest.approx(sigma, rel=0.01)
    assert abs(draws.mean()) < 0.01
    assert stats.kstest(draws, REFERENCE[name](noise.scale).cdf).pvalue > 1e-3


def test_uniform_stays_in_its_support():
    noise = Uniform(1.0)
    draws = noise.sample_(torch.empty(100_000), torch.Generator().manual_seed(0))
    assert draws.abs().max() <= noise.scale
    assert draws.abs().max() > 0.99 * noise.scale


@pytest.mark.parametrize("name", sorted(n for n, c in NOISES.items() if c.additive))
def test_same_seed_same_draws(name):
    noise = make_noise(name, 0.25)
    a = noise.sample_(torch.empty(3, 4, 4), torch.Generator().manual_seed(7))
    b = noise.sample_(torch.empty(3, 4, 4), torch.Generator().manual_seed(7))
    c = noise.sample_(torch.empty(3, 4, 4), torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bounds_per_noise():
    assert Laplace.bounds[0] == "teng" and set(Laplace.bounds) == {
        "teng",
        "lecuyer",
        "teng_multiclass",
    }
    assert Gaussian(1).primary_bound == "cohen"
    assert Uniform(1).primary_bound == "uniform"


@pytest.mark.parametrize("sigma", [0, -0.5, float("nan")])
def test_bad_sigma(sigma):
    with pytest.raises(L1CertError, match="sigma"):
        make_noise("laplace", sigma)


def test_unknown_noise():
    with pytest.raises(L1CertError, match="unknown noise 'cauchy'"):
        make_noise("cauchy", 1.0)
