"""What defines a training run, in one place: the fields, their defaults, help and checks.

`l1cert train` builds its options from these dataclasses, and the pipeline passes the `train:`
section of params.yaml onto them as they are, so a new training parameter is one field here
(plus its value in params.yaml, its type in the schema and its line in the README). Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from l1cert.names import ARCHITECTURES, DATASETS, NORMS, TRAININGS, check_choice
from l1cert.noise import make_noise
from l1cert.utils import L1CertError


def _option(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Type2Config:
    """SmoothAdv: T PGD steps of the given norm against the softmax averaged over m draws."""

    norm: str = _option("linf", "PGD threat model: linf, l2 or l1.")
    epsilon: float = _option(0.05, "Perturbation budget in [0, 1] pixel units.")
    steps: int = _option(1, "PGD steps T.")
    samples: int = _option(2, "Noise draws m per example.")
    warmup_epochs: int = _option(10, "Epochs over which epsilon rises linearly.")

    def epsilon_at(self, epoch: int) -> float:
        """ε rises linearly over the warm-up epochs (the step size, 2ε/T, with it)."""
        if self.warmup_epochs <= 0:
            return self.epsilon
        return self.epsilon * min(1.0, (epoch + 1) / self.warmup_epochs)

    def validate(self) -> None:
        check_choice("type2 norm", self.norm, NORMS)
        _check_number("type2 epsilon", self.epsilon, low=0.0)
        _check_int("type2 steps", self.steps, 1)
        _check_int("type2 samples", self.samples, 1)
        _check_int("type2 warmup_epochs", self.warmup_epochs, 0)


@dataclass(frozen=True)
class TrainConfig:
    dataset: str = _option(None, "digits, cifar10, imagenet or imagefolder.")
    arch: str = _option(None, "digits_mlp, cifar_resnet20/110 or resnet50.")
    noise: str = _option(None, "gaussian, laplace or uniform.")
    sigma: float = _option(None, "Per-coordinate std of the noise.")
    training: str = _option("type1", "type1 (noise augmentation) or type2 (SmoothAdv).")
    epochs: int = _option(30, "Epochs of SGD.")
    batch_size: int = _option(64, "Examples per SGD step.")
    lr: float = _option(0.1, "Initial learning rate.")
    lr_step: int = _option(10, "Epochs per lr decay.")
    lr_gamma: float = _option(0.1, "Factor of each lr decay.")
    momentum: float = _option(0.9, "SGD momentum.")
    weight_decay: float = _option(1e-4, "L2 weight decay.")
    seed: int = _option(0, "Seed of initialization, shuffling and noise.")
    type2: Type2Config | None = None  # settings for type2; None means the defaults
    image_size: int = 32  # imagefolder only

    def validate(self) -> None:
        for name in ("dataset", "arch", "noise", "sigma"):
            if getattr(self, name) is None:
                raise L1CertError(f"--{name} is required")
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("arch", self.arch, ARCHITECTURES)
        check_choice("training", self.training, TRAININGS)
        make_noise(self.noise, self.sigma)
        for name in ("epochs", "batch_size", "lr_step"):
            _check_int(name, getattr(self, name), 1)
        _check_int("seed", self.seed, 0)
        _check_number("lr", self.lr, low=0.0, low_open=True)
        _check_number("lr_gamma", self.lr_gamma, low=0.0, low_open=True, high=1.0)
        _check_number("momentum", self.momentum, low=0.0, high=1.0)
        _check_number("weight_decay", self.weight_decay, low=0.0)
        (self.type2 or Type2Config()).validate()

    def settings(self) -> dict:
        """What defines the run: a checkpoint resumes only under the same settings."""
        doc = dataclasses.asdict(self)
        doc["type2"] = dataclasses.asdict(self.type2 or Type2Config())
        if self.training != "type2":
            doc["type2"] = None
        return doc


def _check_int(name: str, value: int, low: int, high: int | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise L1CertError(f"{name} must be {bound}, got {value}")


def _check_number(name, value, low=None, high=None, low_open=False) -> None:
    """Finite, and within [low, high] (low excluded when low_open)."""
    ok = math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or value <= high)
    if not ok:
        span = f"{'(' if low_open else '['}{low}, {high if high is not None else '∞'}]"
        raise L1CertError(f"{name} must be a finite number in {span}, got {value}")


def cli_fields() -> list[tuple[str, dataclasses.Field]]:
    """(option name, field) of every setting `l1cert train` takes: type2's as type2_<name>."""
    top = [(f.name, f) for f in dataclasses.fields(TrainConfig) if f.metadata]
    nested = [(f"type2_{f.name}", f) for f in dataclasses.fields(Type2Config)]
    return top + nested


def from_options(options: dict) -> TrainConfig:
    """TrainConfig from `l1cert train`'s keyword options (type2_<name> for SmoothAdv's)."""
    type2 = {k.removeprefix("type2_"): v for k, v in options.items() if k.startswith("type2_")}
    top = {k: v for k, v in options.items() if not k.startswith("type2_")}
    return TrainConfig(type2=Type2Config(**type2), **top)
