import os
import subprocess
import sys

import pytest
import torch

from l1cert.models import FORMAT, Normalize, build_model, load_model, save_model
from l1cert.utils import L1CertError

DIGITS = dict(num_classes=10, input_shape=[1, 8, 8], mean=[0.3], std=[0.4])
CIFAR = dict(num_classes=10, input_shape=[3, 32, 32], mean=[0.5, 0.4, 0.3], std=[0.2] * 3)


def _params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "arch, spec, batch, params",
    [
        ("digits_mlp", DIGITS, (5, 1, 8, 8), (26_000, 27_000)),
        ("cifar_resnet20", CIFAR, (2, 3, 32, 32), (0.26e6, 0.28e6)),  # He et al.: 0.27M
        ("cifar_resnet110", CIFAR, (2, 3, 32, 32), (1.7e6, 1.75e6)),  # He et al.: 1.7M
        ("resnet50", {**CIFAR, "num_classes": 7}, (1, 3, 64, 64), (23.5e6, 23.6e6)),
    ],
)
def test_architectures(arch, spec, batch, params):
    model = build_model(arch, **spec).eval()
    assert isinstance(model[0], Normalize)
    assert params[0] <= _params(model) <= params[1]
    with torch.no_grad():
        assert model(torch.rand(batch)).shape == (batch[0], spec["num_classes"])


def test_normalize_is_per_channel():
    x = torch.rand(2, 3, 4, 4)
    out = Normalize([0.5, 0.4, 0.3], [0.2, 0.1, 0.5])(x)
    assert torch.allclose(out[:, 1], (x[:, 1] - 0.4) / 0.1)


def test_unknown_arch():
    with pytest.raises(L1CertError, match="unknown arch 'vgg16'"):
        build_model("vgg16", **DIGITS)


def _meta(arch="digits_mlp", spec=DIGITS):
    return {"arch": arch, **spec, "dataset": "digits", "noise": "laplace", "sigma": 0.25}


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model("cifar_resnet20", **CIFAR)
    model.train()(torch.rand(8, 3, 32, 32))  # move batch-norm statistics off their defaults
    save_model(tmp_path / "model.pt", model, _meta("cifar_resnet20", CIFAR))
    raw = torch.load(tmp_path / "model.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["meta"]["sigma"] == 0.25
    loaded, meta = load_model(tmp_path / "model.pt")
    assert not loaded.training and meta == _meta("cifar_resnet20", CIFAR)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    model = build_model("digits_mlp", **DIGITS)
    marker = tmp_path / "payload-ran"
    evil = {"format": FORMAT, "meta": _meta(), "state_dict": model.state_dict()}
    evil["meta"]["note"] = _Payload(marker)
    torch.save(evil, tmp_path / "model.pt")
    with pytest.raises(L1CertError, match="refusing checkpoint") as err:
        load_model(tmp_path / "model.pt")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    # The payload is real: a plain unpickling elsewhere would have run it.
    unsafe = f"import torch; torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", unsafe], check=True, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize(
    "content, match",
    [
        (b"not a torch file at all", "corrupt"),
        ("truncated", "corrupt"),
        ({"weights": 1}, "not an l1cert model"),
        ("mismatch", "does not match its own meta"),
    ],
)
def test_bad_checkpoints(tmp_path, content, match):
    path = tmp_path / "model.pt"
    model = build_model("digits_mlp", **DIGITS)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "truncated":
        save_model(path, model, _meta())
        path.write_bytes(path.read_bytes()[:3000])
    elif content == "mismatch":
        save_model(path, model, {**_meta(), "num_classes": 3})
    else:
        torch.save(content, path)
    with pytest.raises(L1CertError, match=match):
        load_model(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(L1CertError, match="not found"):
        load_model(tmp_path / "nothing.pt")
