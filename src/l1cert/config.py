"""What defines a run, one dataclass per stage, and which of its settings decide the result.

Each field carries its default, type, bounds and help, where the params file holds it (`key`:
`certify.n`, `report.radii`, `resources.certify.threads`; None: the command line or the grid
gives it), and whether it *decides* the result (`decides`):

- True: another value gives other numbers;
- False, run-only: how fast or where the run goes; results are bit-identical across its values
  (tests show it for each: certify's batch, threads and data root in test_certify_cli.py,
  training's data loader workers in test_train.py);
- "mode": decides where the run's sampling mode takes it (`SamplingMode.takes`: n0, n, alpha,
  seed, sampling, radii; an exact noise takes none of them);
- "imagefolder": decides only for the imagefolder dataset (the image size).

A nested section (`type2`, `consistency`, `stability`) holds one training objective's own
settings and decides where the training is that objective. Training's threads decide: a CPU
BLAS cuts a matrix product's sum across threads (measured: the last layer's weight gradient
differs between 1 and 2 threads).

Everything else is generated from these fields (`l1cert.fields` says how): the options of the
`l1cert` commands, the checks every value passes before anything runs, the stage sections of the
params schema, the settings a checkpoint and a certify sidecar record and that resume and merge
compare (`deciding`), and what each pipeline job is rerun for (`l1cert.pipeline`: Snakemake's
params, DVC's params and command).
A new parameter is a field here, its value in params.yaml, its line in the README and its use.
Torch-free.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from l1cert.fields import Checked, option, section
from l1cert.forward import COMPILE_MODES, PRECISIONS
from l1cert.names import ARCHITECTURES, DATASETS, DEFAULT_RADII, NORMS, TRAININGS
from l1cert.noise import NOISES, SIGMA_MAX
from l1cert.utils import L1CertError, parse_radii

SEED_MAX = 2**63 - 1  # what torch.Generator.manual_seed takes
BATCH_MAX = 10**9  # inputs per batch: a typo such as 1e12 is refused at once; check_memory
# refuses what the device cannot hold when the job starts
THREADS_MAX = 4096  # the schema's bound; a job also refuses more than its machine's CPUs


def _noises() -> tuple[str, ...]:
    return tuple(NOISES)


def _samplings() -> tuple[str, ...]:
    """Every sampling mode some noise takes (l1cert.sampling runs them; a test checks the two
    agree). Read from the noises so that training's code does not depend on sampling's."""
    return tuple(dict.fromkeys(mode for cls in NOISES.values() for mode in cls.samplings))


def _not_zero(value: int, flag: str) -> None:
    if value == 0:
        raise L1CertError(f"{flag} must be -1 (all) or a positive count, got 0")


_not_zero.schema = {"not": {"const": 0}}  # what the params schema says of it


def check_cpus(count: int, flag: str) -> None:
    """At most the machine's CPUs (torch segfaults on absurd thread counts)."""
    cpus = os.cpu_count() or 1
    if count > cpus:
        raise L1CertError(f"{flag} {count} exceeds this machine's {cpus} CPUs")


@dataclass(frozen=True)
class DataConfig(Checked):
    """Where a dataset lives and how its images are sized (shared by data, train, certify)."""

    SECTION = "data"

    dataset: str = option(None, "Dataset (certify: default the checkpoint's).",
                           choices=DATASETS, key="dataset")  # fmt: skip
    root: str = option("data", "Where datasets live.", decides=False)
    image_size: int = option(
        32, "Square size of imagefolder images.", decides="imagefolder", low=1, high=4096
    )
    imagenet_dir: str = option(
        None, "ImageNet root (default: $IMAGENET_DIR).", decides=False, key=None
    )


@dataclass(frozen=True)
class Type2Config(Checked):
    """SmoothAdv: T PGD steps of the given norm against the softmax averaged over m draws."""

    SECTION = "train.type2"

    norm: str = option("linf", "PGD threat model: linf, l2 or l1.", choices=NORMS)
    epsilon: float = option(
        0.05, "Perturbation budget in [0, 1] pixel units (summed over pixels for l1).",
        low=0.0, high=1000.0,
    )  # fmt: skip
    steps: int = option(1, "PGD steps T.", low=1, high=1000)
    samples: int = option(2, "Noise draws m per example.", low=1, high=1024)
    warmup_epochs: int = option(10, "Epochs over which epsilon rises linearly.", low=0, high=10**5)

    def epsilon_at(self, epoch: int) -> float:
        """ε rises linearly over the warm-up epochs (the step size, 2ε/T, with it)."""
        if self.warmup_epochs <= 0:
            return self.epsilon
        return self.epsilon * min(1.0, (epoch + 1) / self.warmup_epochs)


@dataclass(frozen=True)
class ConsistencyConfig(Checked):
    """Consistency regularization: m noisy copies of each example, cross-entropy on each,
    λ·KL between their mean prediction and each copy's, η·entropy of the mean."""

    SECTION = "train.consistency"

    copies: int = option(2, "Noisy copies m per example.", low=2, high=64)
    weight: float = option(3.0, "λ, the weight of the KL term.", low=0.0, high=1e4)
    entropy: float = option(0.5, "η, the weight of the mean prediction's entropy.", low=0.0,
                             high=1e4)  # fmt: skip


@dataclass(frozen=True)
class StabilityConfig(Checked):
    """Stability training: two noisy copies of each example, cross-entropy on each, γ·KL
    between their predictions."""

    SECTION = "train.stability"

    weight: float = option(6.0, "γ, the weight of the KL term.", low=0.0, high=1e4)


@dataclass(frozen=True)
class TrainConfig(Checked):
    SECTION = "train"

    arch: str = option(None, "Architecture.", choices=ARCHITECTURES)
    noise: str = option(None, "Smoothing noise.", choices=_noises, key=None)
    sigma: float = option(
        None, "Per-coordinate std of the noise.", low=0.0, low_open=True, high=SIGMA_MAX, key=None
    )
    training: str = option(
        "type1", "The objective: type1 (noise augmentation), type2 (SmoothAdv), consistency or "
        "stability.", choices=TRAININGS, key=None,
    )  # fmt: skip
    epochs: int = option(30, "Epochs of SGD.", low=1, high=10**5)
    batch_size: int = option(64, "Examples per SGD step.", low=1, high=BATCH_MAX)
    lr: float = option(0.1, "Initial learning rate.", low=0.0, low_open=True, high=10.0)
    lr_step: int = option(10, "Epochs per lr decay.", low=1, high=10**5)
    lr_gamma: float = option(0.1, "Factor of each lr decay.", low=0.0, low_open=True, high=1.0)
    momentum: float = option(0.9, "SGD momentum.", low=0.0, high=1.0, high_open=True)
    weight_decay: float = option(1e-4, "L2 weight decay.", low=0.0, high=1.0)
    label_smoothing: float = option(
        0.0, "Label smoothing of the cross-entropy.", low=0.0, high=1.0, high_open=True
    )
    seed: int = option(0, "Seed of initialization, shuffling and noise.", low=0, high=SEED_MAX)
    workers: int = option(0, "DataLoader worker processes.", decides=False, low=0, high=256,
                           check=check_cpus, machine=True)  # fmt: skip
    threads: int = option(
        None, "torch threads (default: torch's own).", key="resources.train.threads",
        low=1, high=THREADS_MAX, check=check_cpus, machine=True,
    )  # fmt: skip
    type2: Type2Config | None = section(Type2Config)
    consistency: ConsistencyConfig | None = section(ConsistencyConfig)
    stability: StabilityConfig | None = section(StabilityConfig)

    def objective(self):
        """The training objective's own settings (None for type1: it has none)."""
        f = next((f for f in dataclasses.fields(self) if f.name == self.training), None)
        if f is None or "section" not in f.metadata:
            return None
        return getattr(self, f.name) or f.metadata["section"]()

    def required(self) -> list[str]:
        return [name for name in ("arch", "noise", "sigma") if getattr(self, name) is None]

    def settings(self, data: DataConfig) -> dict:
        """What defines the trained model: a checkpoint resumes only under the same settings,
        and a finished model is kept only for them (the dataset, and its image size where it
        decides)."""
        if data.dataset is None:
            raise L1CertError("--dataset is required")
        return {**data.deciding(dataset=data.dataset),
                **self.deciding(dataset=data.dataset, training=self.training)}  # fmt: skip


@dataclass(frozen=True)
class CertifyConfig(Checked):
    """CERTIFY's settings: which points, how many draws, at what level, how f runs. Noise and
    sigma override the checkpoint's (command line only; the dataset is `DataConfig`'s)."""

    SECTION = "certify"

    noise: str = option(None, "Smoothing noise (default: the checkpoint's).", choices=_noises,
                         key=None)  # fmt: skip
    sigma: float = option(
        None, "Noise std (default: the checkpoint's).", low=0.0, low_open=True, high=SIGMA_MAX,
        key=None,
    )  # fmt: skip
    split: str = option("test", "Split to certify.", choices=("train", "test", "val"))
    n0: int = option(
        None, "Selection draws (sampled noises; 100).", decides="mode", low=1, high=10**8
    )
    n: int = option(
        None, "Estimation draws, the cap of sequential sampling (sampled noises; 100000).",
        decides="mode", low=1, high=10**12,
    )  # fmt: skip
    alpha: float = option(
        None, "Failure probability (sampled noises; 0.001).", decides="mode", low=0.0,
        low_open=True, high=1.0, high_open=True,
    )  # fmt: skip
    batch: int = option(1000, "Noisy inputs per forward batch.", decides=False, low=1,
                         high=BATCH_MAX)  # fmt: skip
    seed: int = option(
        None, "Seed of the per-point noise (sampled noises; 0).", decides="mode", low=0,
        high=SEED_MAX,
    )  # fmt: skip
    skip: int = option(1, "Every skip-th test point.", low=1, high=10**9)
    max: int = option(-1, "At most this many points (-1: all).", low=-1, high=10**9,
                       check=_not_zero)  # fmt: skip
    sampling: str = option(
        None, "How noise copies are spent: fixed or sequential for sampled noises (fixed), "
        "exact for dssn (its only mode).", decides="mode", choices=_samplings,
    )  # fmt: skip
    radii: str = option(
        None, "Comma-separated l1 radii whose buckets sequential sampling decides.",
        decides="mode", key="report.radii", check=parse_radii,
    )  # fmt: skip
    compile: str = option(
        "off", "torch.compile the model: on, off, or auto (when the job is large enough).",
        choices=COMPILE_MODES, what="compile mode",
    )  # fmt: skip
    precision: str = option("fp32", "Forward precision.", choices=PRECISIONS)
    threads: int = option(
        None, "torch threads (default: torch's own).", decides=False,
        key="resources.certify.threads", low=1, high=THREADS_MAX, check=check_cpus, machine=True,
    )  # fmt: skip

    # What a sampled noise's run takes where n0, n, alpha, sampling or seed are not given.
    SAMPLED = {"n0": 100, "n": 100_000, "alpha": 0.001, "sampling": "fixed", "seed": 0}


@dataclass(frozen=True)
class ReportConfig(Checked):
    """What the report tables: the radii of its tables and metrics, and two figures' settings."""

    SECTION = "report"

    radii: str = option(
        ",".join(f"{r:g}" for r in DEFAULT_RADII),
        "Comma-separated l1 radii of the tables and metrics.",
        check=parse_radii,
    )
    fig6_sigma: float = option(
        0.5, "Noise std of the radius-against-pA figure.", key=None, low=0.0, low_open=True,
        high=SIGMA_MAX,
    )  # fmt: skip
    cost_radius: float = option(
        0.5, "Radius of the accuracy-against-cost figure and of the DVC metric's accuracy.",
        key=None, low=0.0, high=1e6,
    )  # fmt: skip
