"""Base classifiers: a normalization layer first, then the network; and the checkpoint format.

Inputs are [0, 1] pixels; smoothing noise is added to them, so normalization lives inside
the model (as in Cohen et al.). A checkpoint is a plain dict of tensors and JSON-able meta,
loaded with `weights_only=True`: a file carrying pickled code is refused, never run.
"""

from __future__ import annotations

import itertools
import os
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from l1cert.names import ARCHITECTURES, check_choice
from l1cert.utils import L1CertError, atomic_path

FORMAT = "l1cert-model/1"


class Normalize(nn.Module):
    """(x - mean) / std per channel; mean and std travel with the weights."""

    def __init__(self, mean: list[float], std: list[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


# --- networks ------------------------------------------------------------------------------


def digits_mlp(input_shape: list[int], num_classes: int) -> nn.Module:
    """Two hidden layers of 128: tiny, so certifying many models with 10^4 draws each is quick."""
    features = int(torch.tensor(input_shape).prod())
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(features, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, channels_in: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n+2: three stages of 16, 32, 64 channels."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise L1CertError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        layers = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
        channels_in = 16
        for channels, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                layers.append(BasicBlock(channels_in, channels, stride if i == 0 else 1))
                channels_in = channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def cifar_resnet20(input_shape: list[int], num_classes: int) -> nn.Module:
    return CifarResNet(20, num_classes, input_shape[0])


def cifar_resnet110(input_shape: list[int], num_classes: int) -> nn.Module:
    return CifarResNet(110, num_classes, input_shape[0])


def resnet50(input_shape: list[int], num_classes: int) -> nn.Module:
    from torchvision.models import resnet50 as torchvision_resnet50

    return torchvision_resnet50(weights=None, num_classes=num_classes)


# The builders, under the names of `l1cert.names.ARCHITECTURES`.
ARCHS: dict[str, Callable[[list[int], int], nn.Module]] = {
    name: globals()[name] for name in ARCHITECTURES
}


def check_arch(arch: str) -> None:
    check_choice("arch", arch, ARCHITECTURES)


def build_model(
    arch: str, num_classes: int, input_shape: list[int], mean: list[float], std: list[float]
) -> nn.Sequential:
    """Normalize(mean, std) followed by the network `arch`."""
    check_arch(arch)
    return nn.Sequential(Normalize(mean, std), ARCHS[arch](list(input_shape), num_classes))


# --- checkpoints ---------------------------------------------------------------------------


def save_model(
    path: str | os.PathLike, model: nn.Module, meta: dict, noise_state: dict | None = None
) -> None:
    """Write {"format", "meta", "state_dict", "noise_state"} atomically; meta must rebuild the
    model, noise_state holds the tensors its noise keeps (DSSN's template), plain tensors."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    noise = {k: v.detach().cpu().contiguous() for k, v in (noise_state or {}).items()}
    with atomic_path(path) as tmp:
        torch.save(
            {"format": FORMAT, "meta": dict(meta), "state_dict": state, "noise_state": noise}, tmp
        )


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """torch.load with weights_only=True: tensors and plain containers only, code refused.

    Whatever the file holds (text, random bytes, a truncated or altered checkpoint), what
    fails to load is one L1CertError naming the file: torch's unpickler meets such bytes with
    KeyError, IndexError, struct.error, UnicodeDecodeError, AssertionError and more, and warns
    about unknown pickle protocols on the way (kept off the user's terminal here)."""
    path = Path(path)
    if not path.is_file():
        raise L1CertError(f"checkpoint {path} not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        if not found:
            raise L1CertError(f"checkpoint {path} is corrupt or not a torch file") from err
        raise L1CertError(
            f"refusing checkpoint {path}: it would load {found.group(1)}, code rather "
            "than weights; nothing in it was run"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise L1CertError(f"checkpoint {path} is corrupt or not a torch file ({first})") from err
    except Exception as err:  # any other failure to unpickle these bytes: not a checkpoint
        raise L1CertError(
            f"checkpoint {path} is corrupt or not a torch file ({type(err).__name__})"
        ) from err


def check_meta(meta, path) -> dict:
    """The checkpoint's meta, if it can rebuild and describe the model; else one line."""
    if not isinstance(meta, dict):
        raise L1CertError(f"checkpoint {path} has no meta dict describing its model")
    expected = {
        "arch": str,
        "dataset": str,
        "noise": str,
        "num_classes": int,
        "input_shape": list,
        "mean": list,
        "std": list,
        "sigma": (int, float),
    }
    for key, kind in expected.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise L1CertError(f"checkpoint {path}: meta {key} is {meta.get(key)!r}, not valid")
    shape = meta["input_shape"]
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise L1CertError(f"checkpoint {path}: meta input_shape {shape!r} is not a shape")
    if meta["num_classes"] < 1:
        raise L1CertError(f"checkpoint {path}: meta num_classes {meta['num_classes']} < 1")
    return meta


def check_fits(model: nn.Module, input_shape, what: str) -> None:
    """One forward pass on a blank batch: an architecture that cannot take these inputs fails
    here with one line, not deep inside a long job."""
    device = next(itertools.chain(model.parameters(), model.buffers())).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((2, *input_shape), device=device))
    except RuntimeError as err:
        shape = "x".join(map(str, input_shape))
        raise L1CertError(
            f"{what} cannot take {shape} inputs ({str(err).splitlines()[0][:120]})"
        ) from None
    finally:
        model.train(was_training)


def load_model(path: str | os.PathLike, device="cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model a checkpoint describes; return it in eval mode with its meta."""
    model, meta, _ = load_model_and_noise(path, device)
    return model, meta


def load_model_and_noise(path: str | os.PathLike, device="cpu") -> tuple[nn.Module, dict, dict]:
    """`load_model`, and the tensors its noise keeps ({'template': ...} for DSSN, else {})."""
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise L1CertError(f"{path} is not an l1cert model checkpoint (format {FORMAT})")
    meta = check_meta(ckpt.get("meta"), path)
    try:
        model = build_model(
            meta["arch"], meta["num_classes"], meta["input_shape"], meta["mean"], meta["std"]
        )
        model.load_state_dict(ckpt["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError, L1CertError) as err:
        first = str(err).strip().splitlines()[0]
        raise L1CertError(f"checkpoint {path} does not match its own meta: {first}") from err
    noise_state = ckpt.get("noise_state", {})
    if not isinstance(noise_state, dict) or not all(
        isinstance(v, torch.Tensor) for v in noise_state.values()
    ):
        raise L1CertError(f"checkpoint {path}: noise_state is not a dict of tensors")
    return model.to(device).eval(), meta, noise_state
