"""Certify files read back as per-point arrays, and the statistics of the paper's tables.

Approximate certified accuracy (the paper's Eq. 3) is the fraction of test points whose
prediction is correct and whose certified radius is at least r; ACR is the mean radius over
correct points (Zhai et al. 2020); the envelope is the best accuracy over σ at each radius.

Identity (dataset, training, noise, σ, model name) comes from the sidecar that certify writes
from the checkpoint. Only Cohen et al.'s six-column files, which have none, are named from
their path (σ from `noise_0.25`, `sigma_0.25` or `-s0.25`; noise gaussian, bound cohen) and
from the reader's `dataset` and `label` (shown as the training type). Dataset, training and
model name end up in the report's file names and rows, so each must be a plain name
(`l1cert.names.check_plain_name`), wherever it came from. Torch-free.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l1cert import certify_format as fmt
from l1cert.certificates import BOUNDS
from l1cert.names import DATASETS, TRAININGS, check_plain_name
from l1cert.noise import NOISES
from l1cert.utils import L1CertError

_SIGMA_IN_PATH = re.compile(r"(?:^|[-_/])(?:s|sigma_|noise_)(?P<sigma>\d+(?:\.\d+)?)(?:$|[-_/])")
# Row columns that repeat a run setting: each must hold one value, the sidecar's.
_ROW_SETTINGS = {"noise": str, "sigma": float, "n0": int, "n": int, "alpha": float}


def log(message: str) -> None:
    print(f"l1cert report: {message}", file=sys.stderr, flush=True)


# --- reading certify files ----------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """One certify file: a smoothed model's predictions and its radius under each bound."""

    path: Path
    dataset: str
    noise: str
    training: str
    sigma: float | None
    model: str  # unique within the dataset, e.g. laplace-type1-s0.25
    n0: int | None
    n: int | None
    alpha: float | None
    predict: np.ndarray
    correct: np.ndarray  # bool: the primary bound's prediction is the label
    radii: dict[str, np.ndarray] = field(repr=False)  # bound -> radius per point
    # bound -> the points it certifies with the right class, and those where it abstains:
    # `correct` and `predict == -1` but for Theorem 1, which may certify where p̲A ≤ 1/2
    hits: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    abstains: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    sampling: str = "fixed"

    @property
    def points(self) -> int:
        return len(self.correct)

    @property
    def bounds(self) -> tuple[str, ...]:
        return tuple(self.radii)

    def accuracy(self, bound: str, radii) -> np.ndarray:
        """Certified accuracy under `bound` at each radius (Eq. 3)."""
        return certified_accuracy(self.radii[bound], self.hits[bound], radii)


def read_certificates(
    path: str | Path, dataset: str | None = None, label: str | None = None
) -> Certificates:
    """Read and validate one merged certify file (ours, or Cohen et al.'s six columns, which
    take their dataset and training label from the arguments or else their path)."""
    path = Path(path)
    settings = fmt.read_sidecar(path, required=False, code=False)  # the report needs no code
    table = fmt.read_rows(path, settings.get("num_classes"))
    if not table.rows:
        raise L1CertError(f"{path}: holds a header but no certified points")
    if settings:
        fmt.check_sealed(path, settings, table)
        identity = _sidecar_identity(path, settings, table)
    elif "noise" in table.header:
        raise L1CertError(
            f"{path}: an l1cert certify file without its sidecar {fmt.sidecar_path(path)}"
        )
    else:
        identity = _cohen_identity(path, dataset, label)
    noise = identity["noise"]
    bounds = NOISES[noise].bounds
    if "noise" in table.header:
        # top_class came later: files without it count every bound's hits by `correct`
        missing = [c for c in fmt.columns(noise)[:-1] if c not in table.header]
        if missing:
            raise L1CertError(f"{path}: missing column(s) {', '.join(missing)} for {noise} noise")
        columns = {b: f"radius_{b}" for b in bounds}
    else:
        columns = {bounds[0]: "radius"}
    predict = np.asarray(table.column("predict", int))
    correct = np.asarray(table.column("correct", int)).astype(bool)
    radii = {bound: np.asarray(table.column(column)) for bound, column in columns.items()}
    hits, abstains = {}, {}
    for bound, radius in radii.items():
        if BOUNDS[bound].uses_pb and "top_class" in table.header:
            top_class = np.asarray(table.column("top_class", int))
            label = np.asarray(table.column("label", int))
            hits[bound], abstains[bound] = (radius > 0) & (top_class == label), radius <= 0
        else:
            hits[bound], abstains[bound] = correct, predict == -1
    return Certificates(
        path=path,
        predict=predict,
        correct=correct,
        radii=radii,
        hits=hits,
        abstains=abstains,
        **identity,
    )


def _sidecar_identity(path: Path, settings: dict, table: fmt.Table) -> dict:
    keys = ("dataset", "training", "noise", "sigma", "model_name", "n0", "n", "alpha")
    missing = [key for key in keys if key not in settings]
    if missing:
        raise L1CertError(f"{fmt.sidecar_path(path)}: lacks {', '.join(missing)}")
    sequential = settings.get("sampling") == "sequential"
    if sequential and max(table.column("n", int)) > settings["n"]:
        raise L1CertError(f"{path}: a row drew more than the cap n = {settings['n']}")
    for name, kind in _ROW_SETTINGS.items():
        if name == "n" and sequential:  # each point's own number of draws, up to the cap
            continue
        values = set(table.column(name, str))
        if len(values) > 1:
            shown = ", ".join(sorted(values)[:3])
            raise L1CertError(f"{path}: mixed settings: column {name} holds {shown}")
        value = values.pop()
        try:
            same = _same(kind(value), settings[name])
        except ValueError:
            raise L1CertError(f"{path}: column {name}: {value!r} is not valid") from None
        if not same:
            raise L1CertError(
                f"{path}: mixed settings: the sidecar says {name} "
                f"{settings[name]}, the rows say {value}"
            )
    if settings["noise"] not in NOISES:
        raise L1CertError(f"{path}: unknown noise {settings['noise']!r}")
    for key in ("dataset", "training", "model_name"):  # they name the report's files and rows
        check_plain_name(f"{fmt.sidecar_path(path)}: {key}", settings[key])
    return {
        "dataset": str(settings["dataset"]),
        "training": str(settings["training"]),
        "noise": settings["noise"],
        "sigma": float(settings["sigma"]),
        "model": str(settings["model_name"]),
        "n0": int(settings["n0"]),
        "n": int(settings["n"]),
        "alpha": float(settings["alpha"]),
        "sampling": str(settings.get("sampling", "fixed")),
    }


def _same(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-6) if isinstance(a, float) else a == b


def _cohen_identity(path: Path, dataset: str | None, label: str | None) -> dict:
    """Cohen et al.'s files: Gaussian, σ from the path, dataset and label from the caller."""
    plain = path.with_suffix("") if path.suffix in (".tsv", ".txt") else path
    found = _SIGMA_IN_PATH.search(plain.as_posix())
    sigma = float(found["sigma"]) if found else None
    if dataset is None:
        dataset = next((part for part in reversed(path.parts) if part in DATASETS), "unknown")
    check_plain_name("--dataset", dataset)
    training = check_plain_name("--label", label) if label else "unknown"
    model = f"gaussian-{training}-s{sigma:g}" if sigma is not None else path.name
    return {
        "dataset": dataset,
        "training": training,
        "noise": "gaussian",
        "sigma": sigma,
        "model": model,
        "n0": None,
        "n": None,
        "alpha": None,
    }


def read_all(
    paths: Iterable[str | Path],
    dataset: str | None = None,
    label: str | None = None,
    quiet: bool = False,
) -> list[Certificates]:
    """Read every file, refusing two files for the same dataset and model; log each once all
    are read (an error is then the only line on stderr), unless `quiet`: the caller then
    checks more and calls `log_reads` itself."""
    runs, seen = [], {}
    for path in paths:
        run = read_certificates(path, dataset, label)
        key = (run.dataset, run.model)
        if key in seen:
            other, other_sampling = seen[key]
            if other_sampling != run.sampling:
                raise L1CertError(
                    f"{path}: a {run.sampling} and a {other_sampling} run ({other}) of the same "
                    f"model ({run.dataset}, {run.model}) would share a table row; report them "
                    "separately"
                )
            raise L1CertError(
                f"{path}: same dataset and model ({run.dataset}, {run.model}) as {other}"
            )
        seen[key] = path, run.sampling
        runs.append((path, run))
    if not runs:
        raise L1CertError("no certify files given")
    runs = [run for _, run in runs]
    if not quiet:
        log_reads(runs)
    return sorted(runs, key=_run_order)


def log_reads(runs: Iterable[Certificates]) -> None:
    for run in runs:
        log(
            f"read {run.path}: {run.dataset} {run.model}: {run.points} points, "
            f"bounds {', '.join(run.bounds)}"
        )


def training_rank(training: str) -> int:
    return TRAININGS.index(training) if training in TRAININGS else len(TRAININGS)


def _run_order(run: Certificates):
    return (
        run.dataset,
        training_rank(run.training),
        run.training,
        run.noise,
        run.sigma if run.sigma is not None else math.inf,
        run.model,
    )


def all_bounds() -> list[str]:
    return [b for noise in NOISES.values() for b in noise.bounds]


# --- statistics ---------------------------------------------------------------------------


def certified_accuracy(radius: np.ndarray, correct: np.ndarray, radii) -> np.ndarray:
    """Eq. 3: mean over points of correct·1(radius ≥ r), for each r (NaN radii never count)."""
    certified = np.sort(radius[correct & ~np.isnan(radius)])
    radii = np.asarray(radii, dtype=float)
    at_least = len(certified) - np.searchsorted(certified, radii, side="left")
    return at_least / len(radius)


def average_certified_radius(radius: np.ndarray, correct: np.ndarray) -> float:
    """ACR (Zhai et al. 2020): mean over all points of radius·correct (wrong or abstained: 0)."""
    return float(np.where(correct, np.nan_to_num(radius, nan=0.0), 0.0).mean())


@dataclass(frozen=True)
class Row:
    """One model × bound line of the certified-accuracy table."""

    run: Certificates
    bound: str
    clean_accuracy: float
    abstention_rate: float
    acr: float
    accuracy: np.ndarray  # at the report radii


def accuracy_rows(runs: Sequence[Certificates], radii: Sequence[float]) -> list[Row]:
    return [
        Row(
            run,
            bound,
            clean_accuracy=float(run.hits[bound].mean()),
            abstention_rate=float(run.abstains[bound].mean()),
            acr=average_certified_radius(radius, run.hits[bound]),
            accuracy=run.accuracy(bound, radii),
        )
        for run in runs
        for bound, radius in run.radii.items()
    ]


@dataclass(frozen=True)
class Envelope:
    """Best certified accuracy over σ at each radius, for one dataset × training × bound."""

    dataset: str
    training: str
    bound: str
    accuracy: np.ndarray
    best: list[Certificates | None]  # the model achieving it (None where every model has 0)
    members: list[Certificates]


def envelopes(runs: Sequence[Certificates], radii: Sequence[float]) -> list[Envelope]:
    """Ties go to the smaller σ (models are sorted by σ)."""
    groups: dict[tuple, list[Certificates]] = {}
    for run in runs:
        for bound in run.bounds:
            groups.setdefault((run.dataset, run.training, bound), []).append(run)
    result = []
    for (dataset, training, bound), members in groups.items():
        curves = np.array([m.accuracy(bound, radii) for m in members])
        winner = curves.argmax(axis=0)
        best = curves.max(axis=0)
        best_models = [members[w] if b > 0 else None for w, b in zip(winner, best, strict=True)]
        result.append(Envelope(dataset, training, bound, best, best_models, members))
    order = all_bounds()
    return sorted(
        result,
        key=lambda e: (e.dataset, training_rank(e.training), e.training, order.index(e.bound)),
    )


def radius_grid(runs: Sequence[Certificates], points: int = 400) -> np.ndarray:
    """A round-stepped radius grid from 0 just past the largest certified radius."""
    largest = max(
        (float(np.nanmax(r, initial=0.0)) for run in runs for r in run.radii.values()), default=0.0
    )
    largest = max(largest, 1e-3)
    raw = largest / points
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return np.round(np.arange(0.0, largest + step, step), 10)


def settings_text(runs: Sequence[Certificates]) -> str:
    """'n = 10000, n0 = 100, α = 0.001, fixed sampling' (sets where the files differ)."""

    def values(attr, form="{:g}"):
        found = sorted({getattr(r, attr) for r in runs if getattr(r, attr) is not None})
        if not found:
            return "unknown"
        shown = ", ".join(form.format(v) for v in found)
        return shown if len(found) == 1 else "{" + shown + "}"

    modes = {r.sampling for r in runs}
    cap = " (the cap of sequential sampling)" if "sequential" in modes else ""
    n = f"n = {values('n')}{cap}"
    return f"{n}, n0 = {values('n0')}, α = {values('alpha')}, {values('sampling', '{}')} sampling"
