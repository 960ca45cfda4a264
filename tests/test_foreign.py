"""`l1cert import`: foreign checkpoints, built here from independent networks, import exactly.

Each source is saved in its authors' own layout: Sequential(normalization, network) inside
{'epoch', 'arch', 'state_dict', 'optimizer'} for Cohen et al. and Salman et al., a bare
state_dict for torchvision. The imported model on raw [0, 1] input must give the source
network's logits on normalized input.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torchvision.models import resnet50

from l1cert import data
from l1cert.certify import certify_to_tsv
from l1cert.certify_format import file_sha256
from l1cert.cli import main
from l1cert.data import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from l1cert.foreign import import_checkpoint
from l1cert.models import load_model
from l1cert.smoothing import Smooth

torch.set_num_threads(4)

# --- the source side: a CIFAR ResNet written independently of l1cert.models ----------------


class Block(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class RefCifarResNet(nn.Module):
    """conv1/bn1, layer1..3 of (depth - 2) / 6 blocks, AvgPool2d(8), fc: the bearpaw layout."""

    def __init__(self, depth, num_classes=10):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        widths = [(16, 16, 1), (16, 32, 2), (32, 64, 2)]
        for i, (c_in, c_out, stride) in enumerate(widths, 1):
            blocks = [Block(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1)
                      for j in range(n)]  # fmt: skip
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class PlainNormalize(nn.Module):
    """Like their NormalizeLayer: mean and std are plain attributes, so no state_dict keys."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def forward(self, x):
        return (x - self.mean) / self.std


def randomize(net, seed):
    """Random weights and batch-norm running statistics, so every tensor's place matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0, (2 / m.weight[0].numel()) ** 0.5, generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.2, 0.6, generator=gen)
                m.bias.normal_(0, 0.1, generator=gen)
                m.running_mean.normal_(0, 0.1, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(1000)
    return net.eval()


def their_checkpoint(path, source, arch):
    """The dict their train.py saves, optimizer state after one step included."""
    optimizer = torch.optim.SGD(source.parameters(), lr=0.1, momentum=0.9)
    for p in source.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # momentum buffers: tensors in 'optimizer', as in the released files
    state = {"epoch": 90, "arch": arch, "state_dict": source.state_dict(),
             "optimizer": optimizer.state_dict()}  # fmt: skip
    torch.save(state, path)
    return path


def assert_same_logits(source, imported_path, shape, source_input=None):
    model, meta = load_model(imported_path)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = source(x)
        got = model(x)
    scale = want.abs().max()
    diff = (got - want).abs().max()
    print(f"{meta['name']}: max |logit diff| {diff:.3g} (max |logit| {scale:.3g})")
    assert diff <= 1e-5 * scale, (diff, scale)
    assert (got.argmax(1) == want.argmax(1)).all()
    return model, meta


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar110(tmp_path_factory):
    """Cohen et al.'s CIFAR-10 ResNet-110 layout, random weights and statistics."""
    net = randomize(RefCifarResNet(110), seed=0)
    source = nn.Sequential(PlainNormalize(CIFAR10_MEAN, CIFAR10_STD), net).eval()
    path = their_checkpoint(tmp_path_factory.mktemp("cohen") / "checkpoint.pth.tar",
                            source, "cifar_resnet110")  # fmt: skip
    return source, path


@pytest.fixture(scope="module")
def imagenet50():
    return randomize(resnet50(weights=None), seed=2)


# --- exactness -----------------------------------------------------------------------------


def test_their_normalize_layer_has_no_keys(cifar110):
    source, path = cifar110
    keys = list(torch.load(path, weights_only=True)["state_dict"])
    assert keys[0] == "1.conv1.weight" and not any(k.startswith("0.") for k in keys)
    assert "1.layer3.0.downsample.0.weight" in keys and "1.layer1.0.downsample.0.weight" not in keys


def test_cohen_cifar_resnet110_is_exact(cifar110, tmp_path):
    source, path = cifar110
    out = tmp_path / "model.pt"
    meta = import_checkpoint(path, out, "cohen", "cifar10", "gaussian", 0.25)
    model, loaded = assert_same_logits(source, out, (4, 3, 32, 32))
    assert loaded == meta
    assert meta["name"] == "cohen-checkpoint-gaussian-s0.25" and meta["arch"] == "cifar_resnet110"
    source = {"file": "checkpoint.pth.tar", "sha256": file_sha256(path), "format": "cohen"}
    assert meta["source"] == {**source, "arch": "cifar_resnet110", "epoch": 90}
    identity = ("cifar10", "gaussian", 0.25, "type1")
    assert (meta["dataset"], meta["noise"], meta["sigma"], meta["training"]) == identity
    assert meta["num_classes"] == 10 and meta["std"] == CIFAR10_STD
    # and it certifies like any l1cert model
    cert = Smooth(model, 10, "gaussian", 0.25).certify(
        torch.rand(3, 32, 32), 10, 100, 0.001, 50, seed=0
    )
    assert set(cert.bound_radii) == {"cohen"}


def test_smoothadv_centers_without_dividing(tmp_path):
    net = randomize(RefCifarResNet(20), seed=1)
    source = nn.Sequential(PlainNormalize(CIFAR10_MEAN, [1.0] * 3), net).eval()
    path = their_checkpoint(tmp_path / "checkpoint.pth.tar", source, "cifar_resnet20")
    out = tmp_path / "model.pt"
    meta = import_checkpoint(path, out, "smoothadv", "cifar10", "laplace", 0.5, training="type2")
    assert meta["std"] == [1.0] * 3 and meta["training"] == "type2"
    assert_same_logits(source, out, (4, 3, 32, 32))


def test_cohen_imagenet_resnet50_in_data_parallel(imagenet50, tmp_path):
    normalize = PlainNormalize(IMAGENET_MEAN, IMAGENET_STD)
    source = nn.Sequential(normalize, nn.DataParallel(imagenet50)).eval()
    path = their_checkpoint(tmp_path / "checkpoint.pth.tar", source, "resnet50")
    assert next(iter(torch.load(path, weights_only=True)["state_dict"])) == "1.module.conv1.weight"
    out = tmp_path / "model.pt"
    import_checkpoint(path, out, "cohen", "imagenet", "gaussian", 0.5)
    assert_same_logits(source, out, (2, 3, 224, 224))


@pytest.mark.parametrize("layout", ["bare", "module-in-dict"])
def test_torchvision_resnet50(imagenet50, tmp_path, layout):
    state = imagenet50.state_dict()
    if layout == "bare":  # older torchvision files carry no num_batches_tracked
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    else:
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    src, out = tmp_path / "resnet50.pth", tmp_path / "model.pt"
    torch.save(state, src)
    meta = import_checkpoint(src, out, "torchvision", "imagenet", "laplace", 1.0)
    assert meta["name"].startswith("torchvision-resnet50-") and meta["arch"] == "resnet50"
    source = nn.Sequential(PlainNormalize(IMAGENET_MEAN, IMAGENET_STD), imagenet50).eval()
    assert_same_logits(source, out, (2, 3, 224, 224))


def test_imported_model_certifies(cifar110, tmp_path, monkeypatch):
    """certify_to_tsv reads the imported model like its own (three stand-in test images)."""
    points = [
        (torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)), i) for i in range(3)
    ]
    monkeypatch.setattr(data, "load_split", lambda name, *args: points)
    import_checkpoint(cifar110[1], tmp_path / "model.pt", "cohen", "cifar10", "laplace", 0.25)
    out = certify_to_tsv(tmp_path / "model.pt", tmp_path / "c.tsv", n0=10, n=100, batch=50,
                         device="cpu", progress=False)  # fmt: skip
    header, *rows = out.read_text().splitlines()
    assert len(rows) == 3 and "radius_teng" in header.split("\t")
    sidecar = json.loads(out.with_suffix(".json").read_text())["result"]
    assert sidecar["dataset"] == "cifar10" and sidecar["noise"] == "laplace"
    assert sidecar["scale"] == pytest.approx(0.25 / 2**0.5)


# --- refusals: one line, exit 2 ------------------------------------------------------------


def run_import(src, *args):
    result = CliRunner().invoke(main, ["import", str(src), *map(str, args)])
    return result.exit_code, result.stderr.strip()


def assert_one_line_error(code, message, fragment):
    assert code == 2, message
    assert message.startswith("l1cert: error: ") and "\n" not in message, message
    assert fragment in message, message


def edited(cifar110, tmp_path, edit):
    ckpt = torch.load(cifar110[1], weights_only=True)
    edit(ckpt)
    torch.save(ckpt, tmp_path / "edited.pth.tar")
    return tmp_path / "edited.pth.tar"


COHEN = ("--format", "cohen", "--dataset", "cifar10", "--noise", "gaussian", "--sigma", 0.25)


def test_cli_imports(cifar110, tmp_path):
    code, message = run_import(cifar110[1], *COHEN, "--noise", "laplace", "--out",
                               tmp_path / "m.pt")  # fmt: skip
    assert code == 0, message
    assert load_model(tmp_path / "m.pt")[1]["noise"] == "laplace"


def test_cli_takes_the_source_as_an_option_once(cifar110, tmp_path):
    src, options = str(cifar110[1]), [*map(str, COHEN), "--out", str(tmp_path / "m.pt")]
    # --path: how the pipeline passes a params entry
    code, message = run_import("--path", src, *options, "--name", "n")
    assert code == 0, message
    assert load_model(tmp_path / "m.pt")[1]["name"] == "n"
    for source in ([src, "--path", src], []):
        result = CliRunner().invoke(main, ["import", *source, *options])
        assert_one_line_error(result.exit_code, result.stderr.strip(), "as SRC or as --path")


@pytest.mark.parametrize(
    "edit, args, fragment",
    [
        (None, ("--arch", "cifar_resnet20"), "holds a cifar_resnet110, not a cifar_resnet20"),
        (lambda c: c.update(arch="cifar_resnet20"), (), "unexpected key '1.layer1.3.conv1.weight'"),
        (
            lambda c: c["state_dict"].pop("1.layer2.0.downsample.1.running_var"),
            (),
            "key '1.layer2.0.downsample.1.running_var' is missing",
        ),
        (
            lambda c: c["state_dict"].update({"1.fc.weight": torch.zeros(100, 64)}),
            (),
            "key '1.fc.weight' is (100, 64), expected (10, 64)",
        ),
        (lambda c: c.pop("arch"), (), "not a cohen checkpoint"),
        (None, ("--format", "keras"), "unknown format 'keras'"),
        (None, ("--dataset", "digits"), "cannot import for dataset 'digits'"),
        (None, ("--format", "torchvision"), "cannot import arch 'cifar_resnet110'"),
    ],
)
def test_cli_refuses_mismatches(cifar110, tmp_path, edit, args, fragment):
    src = edited(cifar110, tmp_path, edit) if edit else cifar110[1]
    if args[:1] == ("--format",) and args[1] == "torchvision":
        args = (*args, "--arch", "cifar_resnet110")
    code, message = run_import(src, *COHEN, *args, "--out", tmp_path / "m.pt")
    assert_one_line_error(code, message, fragment)
    assert not (tmp_path / "m.pt").exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_refused(cifar110, tmp_path):
    ckpt = torch.load(cifar110[1], weights_only=True)
    marker = tmp_path / "payload-ran"
    ckpt["note"] = _Payload(marker)
    torch.save(ckpt, tmp_path / "evil.pth.tar")
    code, message = run_import(tmp_path / "evil.pth.tar", *COHEN, "--out", tmp_path / "m.pt")
    assert_one_line_error(code, message, "refusing checkpoint")
    assert not marker.exists() and not (tmp_path / "m.pt").exists()
    # The payload is real: a plain unpickling would have run it.
    unsafe = f"import torch; torch.load({str(tmp_path / 'evil.pth.tar')!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", unsafe], check=True, capture_output=True)
    assert marker.exists()
