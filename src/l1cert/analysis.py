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
_DRAWS = ("n0", "alpha")  # a sampling mode's own settings (none for exact counting)


def log(message: str) -> None:
    print(f"l1cert report: {message}", file=sys.stderr, flush=True)


# --- reading certify files ----------------------------------------------------------------


@dataclass(frozen=True)
class CertifiedRun:
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
    bound_radii: dict[str, np.ndarray] = field(repr=False)  # bound -> radius per point
    # bound -> the points it certifies with the right class, and those where it abstains:
    # `correct` and `predict == -1` but for Theorem 1, which may certify where p̲A ≤ 1/2
    hits: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    abstains: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    sampling: str = "fixed"
    # What the certificates cost: forward passes (n0 + n) and seconds per point (NaN where a
    # file does not say, as Cohen et al.'s), and the training seconds of the model (None: unknown)
    passes: np.ndarray = field(repr=False, default=None)
    seconds: np.ndarray = field(repr=False, default=None)
    train_seconds: float | None = None
    certify_seconds: float | None = None  # the jobs' wall time, where the sidecar records it

    @property
    def points(self) -> int:
        return len(self.correct)

    @property
    def bounds(self) -> tuple[str, ...]:
        return tuple(self.bound_radii)

    def accuracy(self, bound: str, radii) -> np.ndarray:
        """Certified accuracy under `bound` at each radius (Eq. 3)."""
        return certified_accuracy(self.bound_radii[bound], self.hits[bound], radii)


def read_certificates(
    path: str | Path, dataset: str | None = None, label: str | None = None, bound=None
) -> CertifiedRun:
    """Read and validate one merged certify file (ours, or Cohen et al.'s six columns, which
    take their dataset and training label from the arguments or else their path), or a
    published result directory (`l1cert.published`: rs4a's layout), whose radii are those of
    `bound`."""
    path = Path(path)
    if path.is_dir():
        return _read_published(path, dataset, label, bound)
    settings = fmt.read_sidecar(path, required=False, code=False)  # the report needs no code
    table = fmt.read_rows(path, settings.get("num_classes"))
    if not table.rows:
        raise L1CertError(f"{path}: holds a header but no certified points")
    if settings:
        fmt.check_sealed(path, settings, table)
        identity = _sidecar_identity(path, settings, table)
        if settings.get("code"):  # written by l1cert certify: every row re-derived
            from l1cert.rederive import check_rows

            check_rows(path, table, settings)
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
        missing = [c for c in fmt.columns(noise) if c != "top_class" and c not in table.header]
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
    return CertifiedRun(
        path=path,
        predict=predict,
        correct=correct,
        bound_radii=radii,
        hits=hits,
        abstains=abstains,
        passes=_per_point(table, ("n0", "n")),
        seconds=np.array([_seconds(t) for t in table.column("time", str)]),
        train_seconds=_seconds_of(settings, "train_seconds"),
        certify_seconds=_seconds_of(settings, "certify_seconds"),
        **identity,
    )


def _per_point(table: fmt.Table, columns: tuple[str, ...]) -> np.ndarray:
    """The sum of these numeric columns per row (NaN where the file lacks one)."""
    if not all(c in table.header for c in columns):
        return np.full(len(table.rows), np.nan)
    return np.sum([np.asarray(table.column(c)) for c in columns], axis=0)


def _seconds(text: str) -> float:
    """A `time` cell: seconds (ours) or H:MM:SS.ffffff (Cohen et al.'s timedelta); NaN if
    neither."""
    try:
        parts = [float(part) for part in text.split(":")]
    except ValueError:
        return math.nan
    if len(parts) > 3 or not all(math.isfinite(p) and p >= 0 for p in parts):
        return math.nan
    return sum(part * 60**i for i, part in enumerate(reversed(parts)))


def _seconds_of(settings: dict, key: str) -> float | None:
    value = settings.get(key)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok and value >= 0 else None


def _sidecar_identity(path: Path, settings: dict, table: fmt.Table) -> dict:
    """Who made the rows, from the sidecar; the row columns that repeat a setting must hold
    the sidecar's one value (n0, n, alpha only where the sampling mode has them)."""
    from l1cert.sampling import MODES

    keys = ("dataset", "training", "noise", "sigma", "model_name", "n")
    missing = [key for key in keys if key not in settings]
    if missing:
        raise L1CertError(f"{fmt.sidecar_path(path)}: lacks {', '.join(missing)}")
    sampling = str(settings.get("sampling", "fixed"))
    if sampling not in MODES:
        raise L1CertError(f"{fmt.sidecar_path(path)}: unknown sampling {sampling!r}")
    estimates = MODES[sampling].estimates
    if sampling == "sequential" and max(table.column("n", int)) > settings["n"]:
        raise L1CertError(f"{path}: a row drew more than the cap n = {settings['n']}")
    for name, kind in _ROW_SETTINGS.items():
        if (name == "n" and sampling == "sequential") or (name in _DRAWS and not estimates):
            continue  # each point's own number of draws; or no selection draws, no alpha
        if name in _DRAWS and name not in settings:
            raise L1CertError(f"{fmt.sidecar_path(path)}: lacks {name}")
        values = set(table.column(name, str))
        if len(values) > 1:
            shown = ", ".join(sorted(values)[:3])
            raise L1CertError(f"{path}: mixed settings: column {name} holds {shown}")
        value = values.pop()
        try:
            same = _same(kind(value), settings[name])
        except (TypeError, ValueError):
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
        "n0": int(settings["n0"]) if estimates else None,
        "n": int(settings["n"]),
        "alpha": float(settings["alpha"]) if estimates else None,
        "sampling": sampling,
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


def _read_published(path: Path, dataset, label, bound) -> CertifiedRun:
    """A published result directory as a run: its bound named by the reader (the files do
    not say), σ from its path as for Cohen et al.'s files; its cost is not recorded."""
    from l1cert.certificates import owner
    from l1cert.published import read_published

    if bound not in BOUNDS:
        raise L1CertError(
            f"{path}: a published result directory; say which bound its radii are with "
            f"--bound ({', '.join(BOUNDS)})"
        )
    found = read_published(path)
    identity = {**_cohen_identity(path, dataset, label), "noise": owner(bound)}
    identity["model"] = (
        path.name
        if identity["sigma"] is None
        else (f"{owner(bound)}-{identity['training']}-s{identity['sigma']:g}")
    )
    radius = np.asarray(found.radius, dtype=float)
    predict, correct = np.asarray(found.predict), np.asarray(found.correct)
    return CertifiedRun(
        path=path, predict=predict, correct=correct, bound_radii={bound: radius},
        hits={bound: correct}, abstains={bound: predict == -1},
        passes=np.full(len(predict), np.nan), seconds=np.full(len(predict), np.nan),
        sampling="published", **identity,
    )  # fmt: skip


def read_all(
    paths: Iterable[str | Path],
    dataset: str | None = None,
    label: str | None = None,
    bound: str | None = None,
    quiet: bool = False,
) -> list[CertifiedRun]:
    """Read every file, refusing two files for the same dataset and model; log each once all
    are read (an error is then the only line on stderr), unless `quiet`: the caller then
    checks more and calls `log_reads` itself."""
    runs, seen = [], {}
    for path in paths:
        run = read_certificates(path, dataset, label, bound)
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


def log_reads(runs: Iterable[CertifiedRun]) -> None:
    for run in runs:
        log(
            f"read {run.path}: {run.dataset} {run.model}: {run.points} points, "
            f"bounds {', '.join(run.bounds)}"
        )


def training_rank(training: str) -> int:
    return TRAININGS.index(training) if training in TRAININGS else len(TRAININGS)


def _run_order(run: CertifiedRun):
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

    run: CertifiedRun
    bound: str
    clean_accuracy: float
    abstention_rate: float
    acr: float
    accuracy: np.ndarray  # at the report radii

    @property
    def cost(self) -> dict[str, float]:
        return cost([self.run])


def _certify_seconds(run: CertifiedRun) -> float:
    """The certify jobs' wall time if recorded (a sequential row's time overlaps others'),
    else the sum of the rows' times."""
    return run.certify_seconds if run.certify_seconds is not None else float(np.sum(run.seconds))


def cost(runs: Sequence[CertifiedRun]) -> dict[str, float]:
    """What the runs' certificates cost: forward passes per point (mean over their points, and
    in all; selection draws included), certification seconds in all, and the training seconds
    of their models (NaN where a file does not record it)."""
    passes = np.concatenate([run.passes for run in runs])
    trained = [run.train_seconds for run in runs]
    return {
        "passes_mean": float(np.mean(passes)),
        "passes_total": float(np.sum(passes)),
        "certify_seconds": float(sum(_certify_seconds(run) for run in runs)),
        "train_seconds": math.nan if None in trained else float(sum(trained)),
    }


def accuracy_rows(runs: Sequence[CertifiedRun], radii: Sequence[float]) -> list[Row]:
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
        for bound, radius in run.bound_radii.items()
    ]


@dataclass(frozen=True)
class Envelope:
    """Best certified accuracy over σ at each radius, for one dataset × training × bound."""

    dataset: str
    training: str
    bound: str
    accuracy: np.ndarray
    best: list[CertifiedRun | None]  # the model achieving it (None where every model has 0)
    members: list[CertifiedRun]

    @property
    def cost(self) -> dict[str, float]:
        """What all its models cost together (`cost`)."""
        return cost(self.members)


def envelopes(runs: Sequence[CertifiedRun], radii: Sequence[float]) -> list[Envelope]:
    """Ties go to the smaller σ (models are sorted by σ)."""
    groups: dict[tuple, list[CertifiedRun]] = {}
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


def radius_grid(runs: Sequence[CertifiedRun], points: int = 400) -> np.ndarray:
    """A round-stepped radius grid from 0 just past the largest certified radius."""
    largest = max(
        (float(np.nanmax(r, initial=0.0)) for run in runs for r in run.bound_radii.values()),
        default=0.0,
    )
    largest = max(largest, 1e-3)
    raw = largest / points
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return np.round(np.arange(0.0, largest + step, step), 10)


def settings_text(runs: Sequence[CertifiedRun]) -> str:
    """'n = 10000, n0 = 100, α = 0.001, fixed sampling' (sets where the files differ); exact
    runs add 'exact: L = {55} noise copies per point'."""

    def values(runs, attr, form="{:g}"):
        found = sorted({getattr(r, attr) for r in runs if getattr(r, attr) is not None})
        if not found:
            return "unknown"
        shown = ", ".join(form.format(v) for v in found)
        return shown if len(found) == 1 else "{" + shown + "}"

    sampled = [r for r in runs if r.sampling not in ("exact", "published")]
    exact = [r for r in runs if r.sampling == "exact"]
    published = [r for r in runs if r.sampling == "published"]
    parts = []
    if sampled or not (exact or published):
        cap = (
            " (the cap of sequential sampling)"
            if any(r.sampling == "sequential" for r in sampled)
            else ""
        )
        parts.append(
            f"n = {values(sampled, 'n')}{cap}, n0 = {values(sampled, 'n0')}, "
            f"α = {values(sampled, 'alpha')}, {values(sampled, 'sampling', '{}')} sampling"
        )
    if exact:
        parts.append(f"exact: L = {values(exact, 'n')} noise copies per point")
    if published:
        parts.append("published results: radii as their authors' code computed them")
    return "; ".join(parts)
