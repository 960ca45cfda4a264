"""Certify files and published results read back as runs: per point, predictions and radii.

Three kinds of input, each with its identity (dataset, training, noise, σ, model name):
- l1cert certify files: identity from the sidecar that certify wrote from the checkpoint; every
  row is re-derived from its counts (`l1cert.rederive`), and the file must hold every point its
  own settings name (dataset size, skip, max) unless partial results are asked for;
- Cohen et al.'s six-column TSVs and published result directories (rs4a's layout,
  `l1cert.published`): foreign, read as given (their radii cannot be re-derived: the files hold
  no counts). Their identity comes from the options, else from the file's or directory's own
  name (σ from `noise_0.25`, `sigma_0.25`, `-s0.25` or a trailing `_0.5`; the dataset where the
  name holds one), never from the folders above it; where a name says nothing or two things,
  one line asks for `--sigma` or `--dataset`.
Dataset, training and model name end up in the report's file names and rows, so each must be a
plain name (`l1cert.names.check_plain_name`), wherever it came from. Torch-free.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l1cert import certify_format as fmt
from l1cert.bounds import BOUNDS
from l1cert.names import DATASETS, TRAININGS, check_plain_name
from l1cert.noise import NOISES
from l1cert.utils import L1CertError

# σ in a foreign file's own name: a number after a separator, `s`, `sigma` or `noise` before it.
_SIGMA_IN_NAME = re.compile(r"(?:^|[-_])(?:s|sigma|noise)?_?(\d+(?:\.\d+)?)(?=$|[-_])")


def log(message: str) -> None:
    print(f"l1cert report: {message}", file=sys.stderr, flush=True)


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
    sampling: str | None = None  # the sampling mode (l1cert.sampling); None: a foreign file
    # What the certificates cost: forward passes (n0 + n) and seconds per point (NaN where a
    # file does not say, as Cohen et al.'s), and the training seconds of the model (None: unknown)
    passes: np.ndarray = field(repr=False, default=None)
    seconds: np.ndarray = field(repr=False, default=None)
    train_seconds: float | None = None
    certify_seconds: float | None = None  # the jobs' wall time, where the sidecar records it
    total_points: int | None = None  # the points the run names (more than `points`: partial)
    # bounds whose radii were bracketed, not recomputed (a box bound needs the test points)
    bracketed: tuple[str, ...] = ()

    @property
    def points(self) -> int:
        return len(self.correct)

    @property
    def foreign(self) -> bool:
        """Read as given (Cohen et al.'s files, published results): not re-derived."""
        return self.sampling is None

    @property
    def partial(self) -> bool:
        return self.total_points is not None and self.points < self.total_points

    @property
    def bounds(self) -> tuple[str, ...]:
        return tuple(self.bound_radii)

    def accuracy(self, bound: str, radii) -> np.ndarray:
        """Certified accuracy under `bound` at each radius (Eq. 3)."""
        from l1cert.analysis import certified_accuracy

        return certified_accuracy(self.bound_radii[bound], self.hits[bound], radii)


@dataclass(frozen=True)
class Naming:
    """What the reader was told of foreign inputs: their dataset, training label, σ and whose
    radii a published directory holds (None: from the file's own name, or asked for)."""

    dataset: str | None = None
    label: str | None = None
    sigma: float | None = None
    bound: str | None = None


def read_run(path: str | Path, naming: Naming | None = None, partial: bool = False) -> CertifiedRun:
    """Read and check one certify file (see the module docstring), or a published result
    directory. `partial`: accept a shard, or a file missing points, as what it is."""
    path, naming = Path(path), naming or Naming()
    if path.is_dir():
        return _read_published(path, naming)
    side = fmt.read_sidecar(path, required=False)
    table = fmt.read_rows(path, side["result"]["num_classes"] if side else None)
    if not table.rows:
        raise L1CertError(f"{path}: holds a header but no certified points")
    if not side:
        if "noise" in table.header:
            raise L1CertError(
                f"{path}: an l1cert certify file without its sidecar {fmt.sidecar_path(path)}"
            )
        return _read_cohen(path, table, naming)
    from l1cert.rederive import check_rows

    fmt.check_sealed(path, side, table)
    result = side["result"]
    identity = _identity(path, result)
    bracketed = check_rows(path, table, result)
    total = _check_complete(path, side, table, partial)
    radii = {b: np.asarray(table.column(f"radius_{b}")) for b in _bounds_of(path, result, table)}
    predict = np.asarray(table.column("predict", int))
    correct = np.asarray(table.column("correct", int)).astype(bool)
    top_class = np.asarray(table.column("top_class", int))
    label = np.asarray(table.column("label", int))
    hits, abstains = {}, {}
    for bound, radius in radii.items():
        if BOUNDS[bound].uses_pb:  # Theorem 1 may certify ĉA where the primary bound abstains
            hits[bound], abstains[bound] = (radius > 0) & (top_class == label), radius <= 0
        else:
            hits[bound], abstains[bound] = correct, predict == -1
    return CertifiedRun(
        path=path, predict=predict, correct=correct, bound_radii=radii, hits=hits,
        abstains=abstains,
        passes=np.asarray(table.column("n0")) + np.asarray(table.column("n")),
        seconds=np.array([_seconds(t) for t in table.column("time", str)]),
        train_seconds=_seconds_of(result, "train_seconds"),
        certify_seconds=_seconds_of(side, "certify_seconds"), total_points=total,
        bracketed=tuple(bracketed), **identity,
    )  # fmt: skip


def _bounds_of(path: Path, result: dict, table: fmt.Table) -> list[str]:
    """The bounds a file holds radii of: those its sidecar names, as certify wrote them (a
    bound added to the noise since is not demanded of older files)."""
    bounds = result.get("bounds") or list(NOISES[result["noise"]].bounds)
    unknown = [b for b in bounds if b not in BOUNDS]
    if unknown:
        raise L1CertError(f"{fmt.sidecar_path(path)}: result.bounds names unknown {unknown[0]!r}")
    missing = [f"radius_{b}" for b in bounds if f"radius_{b}" not in table.header]
    if missing:
        raise L1CertError(f"{path}: missing column(s) {', '.join(missing)}")
    return bounds


def _identity(path: Path, result: dict) -> dict:
    """Who made the rows, from the sidecar's result."""
    from l1cert.sampling import MODES

    keys = ("dataset", "training", "noise", "sigma", "model_name", "n", "sampling")
    missing = [key for key in keys if key not in result]
    if missing:
        raise L1CertError(f"{fmt.sidecar_path(path)}: result lacks {', '.join(missing)}")
    if result["noise"] not in NOISES:
        raise L1CertError(f"{path}: unknown noise {result['noise']!r}")
    if result["sampling"] not in MODES:
        raise L1CertError(f"{fmt.sidecar_path(path)}: unknown sampling {result['sampling']!r}")
    for key in ("dataset", "training", "model_name"):  # they name the report's files and rows
        check_plain_name(f"{fmt.sidecar_path(path)}: {key}", result[key])
    estimates = MODES[result["sampling"]].estimates
    return {
        "dataset": str(result["dataset"]),
        "training": str(result["training"]),
        "noise": result["noise"],
        "sigma": float(result["sigma"]),
        "model": str(result["model_name"]),
        "n0": int(result["n0"]) if estimates else None,
        "n": int(result["n"]),
        "alpha": float(result["alpha"]) if estimates else None,
        "sampling": result["sampling"],
    }


def _check_complete(path: Path, side: dict, table: fmt.Table, partial: bool) -> int:
    """The number of points the run names; refuse a shard, or a file whose rows are not exactly
    those points, unless `partial`."""
    from l1cert.points import select_indices

    result, part = side["result"], side["part"]
    expected = select_indices(result["dataset_size"], result["skip"], result["max"])
    if part["shard"] is not None and part["shards"] > 1:
        if not partial:
            raise L1CertError(
                f"{path} is shard {part['shard']} of {part['shards']} ({len(table.rows)} of "
                f"{len(expected)} points): merge the shards first, or pass --partial to report "
                "it as partial results"
            )
    missing = set(expected) - set(table.rows)
    stray = sorted(set(table.rows) - set(expected))
    if stray:
        raise L1CertError(f"{path}: idx {stray[0]} is not a point of its run (skip, max)")
    if missing and not partial:
        raise L1CertError(
            f"{path} holds {len(table.rows)} of the {len(expected)} points its settings name "
            f"(first missing idx {min(missing)}): certify them, or pass --partial to report "
            "it as partial results"
        )
    return len(expected)


def _read_cohen(path: Path, table: fmt.Table, naming: Naming) -> CertifiedRun:
    """Cohen et al.'s six columns: Gaussian noise, its `radius` the Cohen bound."""
    identity = _foreign_identity(path, naming, "gaussian")
    predict = np.asarray(table.column("predict", int))
    correct = np.asarray(table.column("correct", int)).astype(bool)
    return CertifiedRun(
        path=path, predict=predict, correct=correct,
        bound_radii={"cohen": np.asarray(table.column("radius"))},
        hits={"cohen": correct}, abstains={"cohen": predict == -1},
        passes=np.full(len(predict), np.nan),
        seconds=np.array([_seconds(t) for t in table.column("time", str)]), **identity,
    )  # fmt: skip


def _read_published(path: Path, naming: Naming) -> CertifiedRun:
    """A published result directory: its bound named by the reader (the files do not say),
    its cost not recorded."""
    from l1cert.bounds import owner
    from l1cert.published import read_published

    if naming.bound not in BOUNDS:
        raise L1CertError(
            f"{path}: a published result directory; say which bound its radii are with "
            f"--bound ({', '.join(BOUNDS)})"
        )
    identity = _foreign_identity(path, naming, owner(naming.bound))
    found = read_published(path, _num_classes(identity["dataset"]))
    predict, correct = np.asarray(found.predict), np.asarray(found.correct)
    return CertifiedRun(
        path=path, predict=predict, correct=correct,
        bound_radii={naming.bound: np.asarray(found.radius, dtype=float)},
        hits={naming.bound: correct}, abstains={naming.bound: predict == -1},
        passes=np.full(len(predict), np.nan), seconds=np.full(len(predict), np.nan),
        **identity,
    )  # fmt: skip


def _num_classes(dataset: str) -> int | None:
    """The classes of a named dataset, where they are fixed (published results are checked
    against them)."""
    return {"digits": 10, "cifar10": 10, "imagenet": 1000}.get(dataset)


def _foreign_identity(path: Path, naming: Naming, noise: str) -> dict:
    """A foreign input's identity: the options, else its own name (see the module docstring)."""
    name = path.name
    if path.is_file() and path.suffix in (".tsv", ".txt"):
        name = path.stem
    sigma = naming.sigma
    if sigma is None:
        found = {float(m) for m in _SIGMA_IN_NAME.findall(name)}
        if len(found) != 1:
            what = "holds no noise level" if not found else "holds several numbers"
            raise L1CertError(f"{path}: its name {what}; give its sigma with --sigma")
        sigma = found.pop()
    if not (math.isfinite(sigma) and sigma > 0):
        raise L1CertError(f"{path}: sigma {sigma} is not a positive number")
    dataset = naming.dataset
    if dataset is None:
        found = {part for part in re.split(r"[-_.]", name) if part in DATASETS}
        if len(found) != 1:
            raise L1CertError(f"{path}: its name does not say its dataset; give it with --dataset")
        dataset = found.pop()
    check_plain_name("--dataset", dataset)
    training = check_plain_name("--label", naming.label) if naming.label else "unknown"
    return {
        "dataset": dataset,
        "training": training,
        "noise": noise,
        "sigma": float(sigma),
        "model": f"{noise}-{training}-s{sigma:g}",
        "n0": None,
        "n": None,
        "alpha": None,
        "sampling": None,
    }


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


def read_runs(
    paths: Iterable[str | Path], naming: Naming | None = None, partial: bool = False,
    quiet: bool = False,
) -> list[CertifiedRun]:  # fmt: skip
    """Read every file, refusing two files for the same dataset and model; log each once all
    are read (an error is then the only line on stderr), unless `quiet`: the caller then
    checks more and calls `log_reads` itself."""
    runs, seen = [], {}
    for path in paths:
        run = read_run(path, naming, partial)
        key = (run.dataset, run.model)
        if key in seen:
            other, other_sampling = seen[key]
            if other_sampling != run.sampling:
                raise L1CertError(
                    f"{path}: a {run.sampling or 'foreign'} and a {other_sampling or 'foreign'} "
                    f"run ({other}) of the same model ({run.dataset}, {run.model}) would share "
                    "a table row; report them separately"
                )
            raise L1CertError(
                f"{path}: same dataset and model ({run.dataset}, {run.model}) as {other}"
            )
        seen[key] = path, run.sampling
        runs.append(run)
    if not runs:
        raise L1CertError("no certify files given")
    if not quiet:
        log_reads(runs)
    return sorted(runs, key=_run_order)


def log_reads(runs: Iterable[CertifiedRun]) -> None:
    for run in runs:
        points = f"{run.points} of {run.total_points}" if run.partial else f"{run.points}"
        how = "foreign: read as given, not re-derived" if run.foreign else "re-derived"
        if run.bracketed:
            how += f"; {', '.join(run.bracketed)} within bounds only: it needs the test points"
        log(f"read {run.path}: {run.dataset} {run.model}: {points} points, "
            f"bounds {', '.join(run.bounds)} ({how})")  # fmt: skip


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
