"""What defines a run, one dataclass per stage: each field's default, type, bounds and help.

Everything else is generated from these fields: the options of `l1cert train` and
`l1cert certify` (`click_options`), the checks every value passes before anything runs
(`validate`), and the `train:` and `certify:` sections of the params schema that Snakemake
checks before any job starts (`section_schema`, used by `l1cert.pipeline.params_schema`). A
new parameter is a field here, its value in params.yaml and its line in the README; the
pipeline passes whole sections on (`l1cert.pipeline`: DVC's `${train}` and `${certify}`, the
same options for Snakemake). Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from l1cert.forward import COMPILE_MODES, PRECISIONS
from l1cert.names import ARCHITECTURES, DATASETS, NORMS, TRAININGS
from l1cert.noise import NOISES, SIGMA_MAX
from l1cert.utils import L1CertError

SEED_MAX = 2**63 - 1  # what torch.Generator.manual_seed takes
BATCH_MAX = 10**9  # inputs per batch: a typo such as 1e12 is refused at once; check_memory
# refuses what the device cannot hold when the job starts


def _noises() -> tuple[str, ...]:
    return tuple(NOISES)


def _samplings() -> tuple[str, ...]:
    """Every sampling mode some noise takes (l1cert.sampling runs them; a test checks the two
    agree). Read from the noises so that training's code does not depend on sampling's."""
    return tuple(dict.fromkeys(mode for cls in NOISES.values() for mode in cls.samplings))


def _option(default, help: str, *, low=None, high=None, low_open=False, high_open=False,
            choices=None, param=True, what=None):  # fmt: skip
    """A field with its help and checks. `choices`: a tuple, or a function giving one (read
    from a registry); `what` names them in messages (default: the field's name). `param`: part
    of the params file's section (else command line only)."""
    bounds = dict(low=low, high=high, low_open=low_open, high_open=high_open)
    return field(
        default=default,
        metadata={"help": help, "choices": choices, "param": param, "what": what, **bounds},
    )


def _choices(f: dataclasses.Field) -> tuple[str, ...] | None:
    choices = f.metadata.get("choices")
    return choices() if callable(choices) else choices


def check_field(f: dataclasses.Field, value, prefix: str = ""):
    """`value` if it has the field's type and lies within its bounds; else one line naming
    the option (`prefix`: "type2 " for a nested config's)."""
    meta, kind, name = f.metadata, f.type, prefix + f.name
    if kind == "str":
        choices = _choices(f)
        if not isinstance(value, str) or (choices and value not in choices):
            shown = f" (choose from {', '.join(choices)})" if choices else ""
            what = prefix + (meta["what"] or f.name)
            raise L1CertError(f"unknown {what} {value!r}{shown}")
        return value
    option = "--" + name.replace(" ", ".")  # as the params file and both engines spell it
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise L1CertError(f"{option} must be an integer, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise L1CertError(f"{option} must be a finite number, got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if low is not None and (value <= low if meta["low_open"] else value < low):
        floor = "a positive number" if low == 0 and meta["low_open"] else f"at least {low:g}"
        raise L1CertError(f"{option} must be {floor}, got {value!r}")
    if high is not None and (value >= high if meta["high_open"] else value > high):
        ceiling = f"below {high:g}" if meta["high_open"] else f"at most {high:g}"
        raise L1CertError(f"{option} must be {ceiling}, got {value!r}")
    return value


class _Checked:
    """`validate()` checks every field that has a value (None: not given, a default applies)."""

    def validate(self, prefix: str = "") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, _Checked):
                value.validate(f"{prefix}{f.name} ")
            elif f.metadata and value is not None:
                check_field(f, value, prefix)


@dataclass(frozen=True)
class Type2Config(_Checked):
    """SmoothAdv: T PGD steps of the given norm against the softmax averaged over m draws."""

    norm: str = _option("linf", "PGD threat model: linf, l2 or l1.", choices=NORMS)
    epsilon: float = _option(
        0.05, "Perturbation budget in [0, 1] pixel units (summed over pixels for l1).",
        low=0.0, high=1000.0,
    )  # fmt: skip
    steps: int = _option(1, "PGD steps T.", low=1, high=1000)
    samples: int = _option(2, "Noise draws m per example.", low=1, high=BATCH_MAX)
    warmup_epochs: int = _option(10, "Epochs over which epsilon rises linearly.", low=0, high=10**5)

    def epsilon_at(self, epoch: int) -> float:
        """ε rises linearly over the warm-up epochs (the step size, 2ε/T, with it)."""
        if self.warmup_epochs <= 0:
            return self.epsilon
        return self.epsilon * min(1.0, (epoch + 1) / self.warmup_epochs)


@dataclass(frozen=True)
class TrainConfig(_Checked):
    dataset: str = _option(None, "Dataset.", choices=DATASETS, param=False)
    arch: str = _option(None, "Architecture.", choices=ARCHITECTURES)
    noise: str = _option(None, "Smoothing noise.", choices=_noises, param=False)
    sigma: float = _option(
        None, "Per-coordinate std of the noise.", low=0.0, low_open=True, high=SIGMA_MAX,
        param=False,
    )  # fmt: skip
    training: str = _option(
        "type1", "type1 (noise augmentation) or type2 (SmoothAdv).", choices=TRAININGS,
        param=False,
    )  # fmt: skip
    epochs: int = _option(30, "Epochs of SGD.", low=1, high=10**5)
    batch_size: int = _option(64, "Examples per SGD step.", low=1, high=BATCH_MAX)
    lr: float = _option(0.1, "Initial learning rate.", low=0.0, low_open=True, high=10.0)
    lr_step: int = _option(10, "Epochs per lr decay.", low=1, high=10**5)
    lr_gamma: float = _option(0.1, "Factor of each lr decay.", low=0.0, low_open=True, high=1.0)
    momentum: float = _option(0.9, "SGD momentum.", low=0.0, high=1.0, high_open=True)
    weight_decay: float = _option(1e-4, "L2 weight decay.", low=0.0, high=1.0)
    label_smoothing: float = _option(
        0.0, "Label smoothing of the cross-entropy.", low=0.0, high=1.0, high_open=True
    )
    seed: int = _option(0, "Seed of initialization, shuffling and noise.", low=0, high=SEED_MAX)
    workers: int = _option(0, "DataLoader worker processes.", low=0, high=256)
    type2: Type2Config | None = None  # settings for type2; None means the defaults
    image_size: int = 32  # imagefolder only

    def validate(self, prefix: str = "") -> None:
        for name in ("dataset", "arch", "noise", "sigma"):
            if getattr(self, name) is None:
                raise L1CertError(f"--{name} is required")
        super().validate(prefix)
        import os

        if self.workers > (os.cpu_count() or 1):
            raise L1CertError(
                f"workers {self.workers} exceeds this machine's {os.cpu_count()} CPUs"
            )

    @staticmethod
    def defaults() -> dict:
        """{setting: default} of the fields that have one."""
        return {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not None}

    def settings(self) -> dict:
        """What defines the run: a checkpoint resumes only under the same settings (where the
        data loader runs does not count)."""
        doc = dataclasses.asdict(self)
        doc.pop("workers")
        doc["type2"] = dataclasses.asdict(self.type2 or Type2Config())
        if self.training != "type2":
            doc["type2"] = None
        return doc


@dataclass(frozen=True)
class CertifyConfig(_Checked):
    """CERTIFY's settings: which points, how many draws, at what level, how f runs. Dataset,
    noise and sigma override the checkpoint's (command line only)."""

    dataset: str = _option(None, "Dataset (default: the checkpoint's).", choices=DATASETS,
                           param=False)  # fmt: skip
    noise: str = _option(None, "Smoothing noise (default: the checkpoint's).", choices=_noises,
                         param=False)  # fmt: skip
    sigma: float = _option(
        None, "Noise std (default: the checkpoint's).", low=0.0, low_open=True, high=SIGMA_MAX,
        param=False,
    )  # fmt: skip
    split: str = _option("test", "Split to certify.", choices=("train", "test", "val"))
    n0: int = _option(None, "Selection draws (sampled noises; 100).", low=1, high=10**8)
    n: int = _option(
        None, "Estimation draws, the cap of sequential sampling (sampled noises; 100000).",
        low=1, high=10**12,
    )  # fmt: skip
    alpha: float = _option(
        None, "Failure probability (sampled noises; 0.001).", low=0.0, low_open=True, high=1.0,
        high_open=True,
    )  # fmt: skip
    batch: int = _option(1000, "Noisy inputs per forward batch.", low=1, high=BATCH_MAX)
    seed: int = _option(0, "Seed of the per-point noise generators.", low=0, high=SEED_MAX)
    skip: int = _option(1, "Every skip-th test point.", low=1, high=10**9)
    max: int = _option(-1, "At most this many points (-1: all).", low=-1, high=10**9)
    sampling: str = _option(
        None, "How noise copies are spent: fixed or sequential for sampled noises (fixed), "
        "exact for dssn (its only mode).", choices=_samplings,
    )  # fmt: skip
    compile: str = _option(
        "off", "torch.compile the model: on, off, or auto (when the job is large enough).",
        choices=COMPILE_MODES, what="compile mode",
    )  # fmt: skip
    precision: str = _option("fp32", "Forward precision.", choices=PRECISIONS)

    # What a sampled noise's run takes where n0, n, alpha or sampling are not given.
    SAMPLED = {"n0": 100, "n": 100_000, "alpha": 0.001, "sampling": "fixed"}

    def validate(self, prefix: str = "") -> None:
        super().validate(prefix)
        if self.max == 0:
            raise L1CertError("--max must be -1 (all) or a positive count, got 0")


# --- generated from the fields: command-line options and the params schema ------------------


def cli_fields(cls) -> list[tuple[str, dataclasses.Field]]:
    """(option name, field) of every setting a command takes: a nested config's as
    <section>_<name> (type2_norm)."""
    found = []
    for f in dataclasses.fields(cls):
        if f.metadata:
            found.append((f.name, f))
        elif f.name == "type2":
            found += [(f"type2_{g.name}", g) for g in dataclasses.fields(Type2Config)]
    return found


def click_options(cls):
    """A decorator adding one option per field of `cls`: --batch-size, also spelled as the
    params key (--batch_size, --type2.norm), the spelling both engines pass sections on in."""
    import click

    def decorate(command):
        for name, f in reversed(cli_fields(cls)):
            key = name.replace("type2_", "type2.", 1) if name.startswith("type2_") else name
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{key}"] if "_" in name else [])
            kind = {"int": int, "float": float}.get(str(f.type), str)
            choices = _choices(f)
            help = f.metadata["help"] + (f" ({', '.join(choices)})" if choices else "")
            command = click.option(
                *flags, name, type=kind, default=f.default, required=False,
                show_default=f.default is not None, help=help,
            )(command)  # fmt: skip
        return command

    return decorate


def from_options(cls, options: dict):
    """`cls` from a command's keyword options (type2_<name> for SmoothAdv's)."""
    type2 = {k.removeprefix("type2_"): v for k, v in options.items() if k.startswith("type2_")}
    top = {k: v for k, v in options.items() if not k.startswith("type2_")}
    if type2:
        top["type2"] = Type2Config(**type2)
    config = cls(**top)
    config.validate()
    return config


def field_schema(f: dataclasses.Field) -> dict:
    """The JSON Schema of one field, with the same bounds as `check_field`."""
    meta = f.metadata
    if f.type == "str":
        return {"enum": list(_choices(f)), "description": meta["help"]}
    schema = {"type": "integer" if f.type == "int" else "number", "description": meta["help"]}
    for end, word in (("low", "inimum"), ("high", "aximum")):
        if meta.get(end) is not None:
            prefix = "exclusiveM" if meta[f"{end}_open"] else "m"
            schema[prefix + word] = meta[end]
    return schema


def section_schema(cls) -> dict:
    """The params file's section for `cls`: every param field, nothing else; those without a
    default are required (a missing one takes the dataclass's default in both engines)."""
    params = [f for f in dataclasses.fields(cls) if f.metadata and f.metadata["param"]]
    properties = {f.name: field_schema(f) for f in params}
    if cls is TrainConfig:
        properties["type2"] = section_schema(Type2Config)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in params if f.default is None],
        "properties": properties,
    }
