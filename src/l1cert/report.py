"""Tables, metrics and plot data from merged certify files alone (no model, no GPU).

Reads the certify TSV of DESIGN.md §3 (and Cohen et al.'s six-column `certify.py` output),
validates it, and turns it into approximate certified accuracy (the paper's Eq. 3): the fraction
of test points whose prediction is correct and whose certified radius is at least r.

A model is one certify file, named `<noise>-<training>-s<sigma>` within its dataset; each of its
bounds (a `radius_<bound>` column) gives one curve. Identity comes, in this order, from the
sidecar JSON beside the file, the columns, and the path
`.../<dataset>/<noise>-<training>-s<sigma>.tsv`; where these disagree the file is refused.
A six-column file is Gaussian with bound `cohen` unless its sidecar says otherwise (then its
`radius` column is the noise's primary bound); its σ comes from the sidecar or the path
(`-s0.25`, `noise_0.25`, `sigma_0.25`), its training type from the sidecar (else "unknown").
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from l1cert.certify_format import COHEN_COLUMNS, RUN_COLUMNS, columns, sidecar_path
from l1cert.noise import NOISES
from l1cert.utils import L1CertError, atomic_write_text

DEFAULT_RADII = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
KNOWN_DATASETS = ("digits", "cifar10", "imagenet", "imagefolder", "mnist")
TRAINING_ORDER = ("type1", "type2")
# The curves of the per-dataset figures: (noise of the model, bound), as in the paper's Figs. 7-8.
FIGURE_METHODS = (("laplace", "teng"), ("laplace", "lecuyer"), ("gaussian", "cohen"),
                  ("uniform", "uniform"))
BOUND_LABELS = {
    "teng": "Laplace, Thm 2 (teng)",
    "lecuyer": "Laplace, Lecuyer et al. (DP)",
    "teng_multiclass": "Laplace, Thm 1 (teng_multiclass)",
    "cohen": "Gaussian, Cohen et al.",
    "uniform": "Uniform, Yang et al.",
}
RADIUS_LABEL = "ℓ1 radius r (pixel units, inputs in [0, 1])"
ACCURACY_LABEL = "approximate certified accuracy"

_LAYOUT_NAME = re.compile(
    r"^(?P<noise>[a-z]+)-(?P<training>[A-Za-z0-9_]+)-s(?P<sigma>[0-9.eE+-]+)$")
_SIGMA_IN_PATH = re.compile(r"(?:^|[-_/])(?:s|sigma_|noise_)(?P<sigma>\d+(?:\.\d+)?)(?:$|[-_/])")


def log(message: str) -> None:
    print(f"l1cert report: {message}", file=sys.stderr, flush=True)


# --- reading and validating certify files -------------------------------------------------


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
    correct: np.ndarray  # bool
    radii: dict[str, np.ndarray] = field(repr=False)  # bound -> radius per point

    @property
    def points(self) -> int:
        return len(self.correct)

    @property
    def bounds(self) -> tuple[str, ...]:
        return tuple(self.radii)


def _read_sidecar(path: Path) -> dict:
    side = sidecar_path(path)
    if not side.exists():
        return {}
    try:
        settings = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise L1CertError(f"{side}: unreadable sidecar JSON ({err})") from None
    if not isinstance(settings, dict):
        raise L1CertError(f"{side}: sidecar JSON is not an object")
    return settings


def _agree(path: Path, what: str, *claims: tuple[str, object]):
    """The one value all sources claim for `what` (None-valued claims are ignored)."""
    given = [(source, value) for source, value in claims if value is not None]
    for source, value in given[1:]:
        first_source, first = given[0]
        same = math.isclose(value, first) if isinstance(first, float) else value == first
        if not same:
            raise L1CertError(
                f"{path}: mixed settings: {first_source} says {what} {first}, {source} says {value}"
            )
    return given[0][1] if given else None


def _float_or_none(value) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _path_identity(path: Path) -> dict:
    """dataset/noise/training/sigma as far as the path tells them."""
    found: dict = {}
    layout = _LAYOUT_NAME.match(path.stem if path.suffix == ".tsv" else path.name)
    if layout and layout["noise"] in NOISES:
        found.update(noise=layout["noise"], training=layout["training"],
                     sigma=_float_or_none(layout["sigma"]), dataset=path.parent.name)
        return found
    plain = path.with_suffix("") if path.suffix in (".tsv", ".txt") else path
    sigma = _SIGMA_IN_PATH.search(plain.as_posix())
    if sigma:
        found["sigma"] = float(sigma["sigma"])
    datasets = [part for part in path.parts if part in KNOWN_DATASETS]
    if datasets:
        found["dataset"] = datasets[-1]
    return found


def _split_rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, fields) rows; refuses empty, torn or ragged files."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise L1CertError(f"{path}: no such certify file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise L1CertError(f"{path}: unreadable ({err})") from None
    if not text.strip():
        raise L1CertError(f"{path}: empty file (no header, no rows)")
    if not text.endswith("\n"):
        raise L1CertError(f"{path}: truncated: the last line has no newline (torn write?)")
    lines = text.splitlines()
    header = lines[0].split("\t")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise L1CertError(
                f"{path}: truncated or malformed: line {number} has {len(fields)} fields, "
                f"the header has {len(header)}"
            )
        rows.append((number, fields))
    if not rows:
        raise L1CertError(f"{path}: holds a header but no certified points")
    return header, rows


def _column(path, header, rows, name, kind=float) -> np.ndarray:
    at = header.index(name)
    values = []
    for number, fields in rows:
        try:
            values.append(kind(fields[at]))
        except ValueError:
            raise L1CertError(
                f"{path}: line {number}: column {name}: {fields[at]!r} is not a number"
            ) from None
    return np.asarray(values)


def _constant(path, header, rows, name, kind):
    """The single value of a settings column; refuses files mixing settings."""
    at = header.index(name)
    values = {fields[at] for _, fields in rows}
    if len(values) > 1:
        shown = ", ".join(sorted(values)[:3])
        raise L1CertError(f"{path}: mixed settings: column {name} holds {shown}")
    raw = values.pop()
    try:
        return kind(raw)
    except ValueError:
        raise L1CertError(f"{path}: column {name}: {raw!r} is not valid") from None


def read_certificates(path: str | Path) -> Certificates:
    """Read and validate one merged certify file (ours or Cohen et al.'s six columns)."""
    path = Path(path)
    header, rows = _split_rows(path)
    missing = [c for c in COHEN_COLUMNS if c not in header]
    if missing:
        raise L1CertError(f"{path}: missing column(s) {', '.join(missing)}")
    settings = _read_sidecar(path)
    from_path = _path_identity(path)
    # l1cert's sidecar names the checkpoint, results/models/<dataset>/<noise>-<training>-s<sigma>/
    from_model = _path_identity(Path(str(settings.get("model", ""))).parent).get("training")
    cohen_format = "noise" not in header
    if cohen_format:
        row_settings = {}
    else:
        missing = [c for c in COHEN_COLUMNS + RUN_COLUMNS if c not in header]
        if missing:
            raise L1CertError(f"{path}: missing column(s) {', '.join(missing)}")
        row_settings = {
            "noise": _constant(path, header, rows, "noise", str),
            "sigma": _constant(path, header, rows, "sigma", float),
            "n0": _constant(path, header, rows, "n0", int),
            "n": _constant(path, header, rows, "n", int),
            "alpha": _constant(path, header, rows, "alpha", float),
        }
        _constant(path, header, rows, "scale", float)

    def agreed(key, kind=lambda v: v):
        side = settings.get(key)
        return _agree(path, key, ("the sidecar", None if side is None else kind(side)),
                      ("the rows", row_settings.get(key)), ("the path", from_path.get(key)))

    noise = agreed("noise", str) or "gaussian"
    if noise not in NOISES:
        raise L1CertError(f"{path}: unknown noise {noise!r} (choose from {', '.join(NOISES)})")
    sigma = agreed("sigma", float)
    n0, n, alpha = agreed("n0", int), agreed("n", int), agreed("alpha", float)
    dataset = agreed("dataset", str) or "unknown"
    training = _agree(path, "training", ("the sidecar", settings.get("training")),
                      ("the model path", from_model), ("the path", from_path.get("training")))
    training = training or "unknown"

    if cohen_format:
        bounds = {NOISES[noise].bounds[0]: "radius"}
    else:
        bounds = {b: f"radius_{b}" for b in NOISES[noise].bounds}
        missing = [c for c in columns(noise) if c not in header]
        if missing:
            raise L1CertError(f"{path}: missing column(s) {', '.join(missing)} for {noise} noise")

    idx = _column(path, header, rows, "idx", int)
    if len(np.unique(idx)) != len(idx):
        raise L1CertError(f"{path}: duplicate test indices (an unmerged or doubly merged file?)")
    predict = _column(path, header, rows, "predict", int)
    correct = _column(path, header, rows, "correct", int)
    if not np.isin(correct, (0, 1)).all():
        raise L1CertError(f"{path}: column correct holds values other than 0 and 1")
    if (correct[predict == -1] != 0).any():
        raise L1CertError(f"{path}: a point abstains (predict -1) but is marked correct")
    radii = {bound: _column(path, header, rows, column) for bound, column in bounds.items()}
    model = path.stem if _LAYOUT_NAME.match(path.stem) else (
        f"{noise}-{training}-s{sigma:g}" if sigma is not None else path.name)
    return Certificates(path, dataset, noise, training, sigma, model, n0, n, alpha,
                        predict, correct.astype(bool), radii)


def read_all(paths: Iterable[str | Path]) -> list[Certificates]:
    """Read every file (logging each), refusing two files for the same dataset and model."""
    runs, seen = [], {}
    for path in paths:
        log(f"reading {path}")
        run = read_certificates(path)
        key = (run.dataset, run.model)
        if key in seen:
            raise L1CertError(f"{path}: same dataset and model ({run.dataset}, {run.model}) "
                              f"as {seen[key]}")
        seen[key] = path
        runs.append(run)
        log(f"  {run.dataset} {run.model}: {run.points} points, bounds {', '.join(run.bounds)}")
    if not runs:
        raise L1CertError("no certify files given")
    return sorted(runs, key=_run_order)


def _training_rank(training: str) -> int:
    return TRAINING_ORDER.index(training) if training in TRAINING_ORDER else len(TRAINING_ORDER)


def _run_order(run: Certificates):
    return (run.dataset, _training_rank(run.training), run.training, run.noise,
            run.sigma if run.sigma is not None else math.inf, run.model)


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
        Row(run, bound,
            clean_accuracy=float(run.correct.mean()),
            abstention_rate=float((run.predict == -1).mean()),
            acr=average_certified_radius(radius, run.correct),
            accuracy=certified_accuracy(radius, run.correct, radii))
        for run in runs for bound, radius in run.radii.items()
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
        curves = np.array([certified_accuracy(m.radii[bound], m.correct, radii) for m in members])
        winner = curves.argmax(axis=0)
        best = curves.max(axis=0)
        best_models = [members[w] if b > 0 else None
                       for w, b in zip(winner, best, strict=True)]
        result.append(Envelope(dataset, training, bound, best, best_models, members))
    order = _all_bounds()
    return sorted(result, key=lambda e: (e.dataset, _training_rank(e.training), e.training,
                                         order.index(e.bound)))


def radius_grid(runs: Sequence[Certificates], points: int = 400) -> np.ndarray:
    """A round-stepped radius grid from 0 just past the largest certified radius."""
    largest = max((float(np.nanmax(r, initial=0.0)) for run in runs for r in run.radii.values()),
                  default=0.0)
    largest = max(largest, 1e-3)
    raw = largest / points
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return np.round(np.arange(0.0, largest + step, step), 10)


def settings_text(runs: Sequence[Certificates]) -> str:
    """'n = 10000, n0 = 100, α = 0.001' (sets of values where the files differ)."""
    def values(attr):
        found = sorted({getattr(r, attr) for r in runs if getattr(r, attr) is not None})
        if not found:
            return "unknown"
        shown = ", ".join(f"{v:g}" for v in found)
        return shown if len(found) == 1 else "{" + shown + "}"
    return f"n = {values('n')}, n0 = {values('n0')}, α = {values('alpha')}"


# --- tables -------------------------------------------------------------------------------


def _radius_label(r: float) -> str:
    return f"{r:g}"


def _sigma_text(run: Certificates | None) -> str:
    if run is None:
        return "-"
    return f"{run.sigma:g}" if run.sigma is not None else run.model


def accuracy_table(rows: Sequence[Row], radii: Sequence[float]):
    """(header, machine rows, display rows); display shows percentages."""
    header = ["dataset", "model", "noise", "training", "sigma", "bound", "points",
              "clean_accuracy", "abstention_rate", "acr"] + [f"r={_radius_label(r)}" for r in radii]
    machine, display = [], []
    for row in rows:
        run = row.run
        ident = [run.dataset, run.model, run.noise, run.training,
                 "" if run.sigma is None else f"{run.sigma:g}", row.bound, str(run.points)]
        stats = [row.clean_accuracy, row.abstention_rate]
        machine.append(ident + [f"{v:.6g}" for v in (*stats, row.acr, *row.accuracy)])
        display.append(ident + [f"{100 * v:.1f}" for v in stats] + [f"{row.acr:.3f}"]
                       + [f"{100 * v:.1f}" for v in row.accuracy])
    return header, machine, display


def envelope_table(envs: Sequence[Envelope], radii: Sequence[float]):
    """Machine form is long (one line per radius); display form is wide, σ in parentheses."""
    machine_header = ["dataset", "training", "bound", "radius", "certified_accuracy",
                      "sigma", "model"]
    machine = [
        [e.dataset, e.training, e.bound, f"{r:g}", f"{a:.6g}",
         "" if b is None or b.sigma is None else f"{b.sigma:g}", "" if b is None else b.model]
        for e in envs for r, a, b in zip(radii, e.accuracy, e.best, strict=True)
    ]
    display_header = ["dataset", "training", "bound"] + [f"r={_radius_label(r)}" for r in radii]
    display = [
        [e.dataset, e.training, e.bound]
        + [f"{100 * a:.1f} ({_sigma_text(b)})" if b is not None else f"{100 * a:.1f}"
           for a, b in zip(e.accuracy, e.best, strict=True)]
        for e in envs
    ]
    return machine_header, machine, display_header, display


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    align = ["---" if i < 3 or not rows or not _numeric(rows[0][i]) else "---:"
             for i in range(len(header))]
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *map(line, rows)]) + "\n"


def _numeric(text: str) -> bool:
    return _float_or_none(str(text).split(" ")[0]) is not None


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}", "σ": r"$\sigma$", "α": r"$\alpha$",
                  "ℓ": r"$\ell$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str, label: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs} in the document)."""
    spec = "".join("r" if rows and _numeric(rows[0][i]) else "l" for i in range(len(header)))
    lines = [
        r"\begin{table}[t]", r"\centering", r"\small",
        rf"\caption{{{latex_escape(caption)}}}", rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule",
        *(" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows),
        r"\bottomrule", r"\end{tabular}", r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


# --- captions -----------------------------------------------------------------------------


def captions(runs: Sequence[Certificates], radii: Sequence[float], fig6_sigma: float) -> dict:
    """Caption text per output name (figure/table stem), for Snakemake report() and papers."""
    stats = settings_text(runs)
    grid = ", ".join(f"{r:g}" for r in radii)
    text = {
        "certified-accuracy": (
            f"Approximate certified accuracy (Eq. 3 of the paper, in %) at l1 radii {grid}: the "
            "fraction of test points whose smoothed prediction is correct and whose certified "
            "radius under the bound is at least r. One row per model and bound; clean accuracy "
            "is that of the smoothed classifier (abstentions count as wrong), abstention rate is "
            "the fraction of points where it abstains, ACR is the mean over all points of "
            f"radius times correct (Zhai et al. 2020). Certification: {stats}."),
        "envelope": (
            "Envelope over sigma: for each dataset, training type and bound, the best certified "
            "accuracy (in %) at each l1 radius over all noise levels, with the sigma that "
            f"achieves it in parentheses (ties go to the smaller sigma). Certification: {stats}."),
        "bound-comparison": (
            "Where Theorem 1 beats the differential-privacy bound of Lecuyer et al.: over pairs "
            "(lower bound of pA, upper bound of pB) with pB < pA and pA + pB <= 1, red marks "
            "pairs where Theorem 1's radius is larger, green where the DP bound "
            "(lambda/2) ln(pA/pB) is at least as large. The dashed line is the boundary from "
            "Remark 2, pB = (1 - pA)^2 / pA. The comparison does not depend on lambda."),
        "radius-vs-pa": (
            f"Certified l1 radius against the lower bound of pA at sigma = {fig6_sigma:g} "
            "(noises matched by per-coordinate standard deviation): Theorem 2 (teng) and "
            "Lecuyer et al.'s bound for Laplace noise, Cohen et al.'s for Gaussian noise, "
            "and the uniform-noise bound of Yang et al."),
    }
    for dataset in sorted({r.dataset for r in runs}):
        mine = [r for r in runs if r.dataset == dataset]
        stats = settings_text(mine)
        text[f"{dataset}-certified-accuracy"] = (
            f"{dataset}: approximate certified accuracy against l1 radius for each sigma; "
            "columns: the Laplace model certified with Theorem 2 (teng) and with Lecuyer et al.'s "
            "bound, the Gaussian model with Cohen et al.'s, the uniform model with Yang et al.'s; "
            f"rows: training type. Certification: {stats}.")
        text[f"{dataset}-comparison"] = (
            f"{dataset}: the bounds side by side at each sigma (as in the paper's Figs. 7 and 8); "
            f"rows: training type, columns: sigma. Certification: {stats}.")
        text[f"{dataset}-envelope"] = (
            f"{dataset}: envelope over sigma of the certified accuracy for each bound (the "
            f"best curve over all noise levels at each radius), per training type. "
            f"Certification: {stats}.")
    return text


# --- outputs ------------------------------------------------------------------------------

TABLES = ("certified-accuracy", "envelope")
FIGURES = ("bound-comparison", "radius-vs-pa")
DATASET_FIGURES = ("certified-accuracy", "comparison", "envelope")


def expected_outputs(out_dir: str | Path, datasets: Iterable[str],
                     metrics: str | Path | None = None) -> list[Path]:
    """Every file `build_report` writes for these datasets (for declaring pipeline outputs)."""
    out = Path(out_dir)
    datasets = sorted(set(datasets))
    figures = [*FIGURES, *(f"{d}-{f}" for d in datasets for f in DATASET_FIGURES)]
    files = [out / "tables" / f"{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    files += [out / "figures" / f"{f}.{ext}" for f in figures for ext in ("png", "pdf")]
    files += [out / "captions" / f"{name}.rst" for name in (*TABLES, *figures)]
    files += [out / "plots" / "certified-accuracy.csv"]
    files += [out / "plots" / f"{d}-{b}.csv" for d in datasets for b in _all_bounds()]
    files.append(Path(metrics) if metrics else out / "metrics.json")
    return files


def _all_bounds() -> list[str]:
    return [b for noise in NOISES.values() for b in noise.bounds]


def metrics(rows: Sequence[Row], radii: Sequence[float]) -> dict:
    """{'<dataset>/<model>/<bound>': {points, clean_accuracy, abstention_rate, acr,
    certified_accuracy: {'<r>': value}}}: two levels, readable by `dvc metrics show`."""
    return {
        f"{row.run.dataset}/{row.run.model}/{row.bound}": {
            "points": row.run.points,
            "clean_accuracy": round(row.clean_accuracy, 6),
            "abstention_rate": round(row.abstention_rate, 6),
            "acr": round(row.acr, 6),
            "certified_accuracy": {_radius_label(r): round(float(a), 6)
                                   for r, a in zip(radii, row.accuracy, strict=True)},
        }
        for row in rows
    }


def curve_rows(runs: Sequence[Certificates], grids: dict[str, np.ndarray]):
    """Long rows (dataset, model, noise, training, sigma, bound, radius, certified_accuracy)."""
    for run in runs:
        grid = grids[run.dataset]
        for bound, radius in run.radii.items():
            for r, a in zip(grid, certified_accuracy(radius, run.correct, grid), strict=True):
                yield [run.dataset, run.model, run.noise, run.training,
                       "" if run.sigma is None else f"{run.sigma:g}", bound, f"{r:g}", f"{a:.6g}"]


def bound_plot_csv(runs: Sequence[Certificates], bound: str, grid: np.ndarray) -> str:
    """Wide per-bound curves for `dvc plots`: radius, then one column per model (σ)."""
    members = [r for r in runs if bound in r.radii]
    header = ["radius"] + [m.model.replace(".", "_") for m in members]
    curves = [certified_accuracy(m.radii[bound], m.correct, grid) for m in members]
    rows = [[f"{r:g}", *(f"{c[i]:.6g}" for c in curves)] for i, r in enumerate(grid)]
    return to_csv(header, rows)


def _write(path: Path, text: str) -> None:
    atomic_write_text(path, text)
    log(f"wrote {path}")


def build_report(paths: Sequence[str | Path], out_dir: str | Path,
                 radii: Sequence[float] = DEFAULT_RADII, metrics_path: str | Path | None = None,
                 fig6_sigma: float = 0.5) -> list[Path]:
    """Tables, figures, plot data, captions and metrics from certify files; returns paths."""
    from l1cert import figures  # matplotlib only when figures are drawn

    radii = sorted({float(r) for r in radii})
    if not radii or any(r < 0 or not math.isfinite(r) for r in radii):
        raise L1CertError("--radii must be non-negative numbers")
    runs = read_all(paths)
    out = Path(out_dir)
    datasets = sorted({r.dataset for r in runs})
    stats = settings_text(runs)
    written = []

    def write(path: Path, text: str):
        _write(path, text)
        written.append(path)

    rows = accuracy_rows(runs, radii)
    header, machine, display = accuracy_table(rows, radii)
    caption = captions(runs, radii, fig6_sigma)
    write(out / "tables/certified-accuracy.csv", to_csv(header, machine))
    write(out / "tables/certified-accuracy.md", to_markdown(header, display))
    write(out / "tables/certified-accuracy.tex",
          to_latex(header, display, caption["certified-accuracy"], "tab:certified-accuracy"))

    envs = envelopes(runs, radii)
    m_header, m_rows, d_header, d_rows = envelope_table(envs, radii)
    write(out / "tables/envelope.csv", to_csv(m_header, m_rows))
    write(out / "tables/envelope.md", to_markdown(d_header, d_rows))
    write(out / "tables/envelope.tex",
          to_latex(d_header, d_rows, caption["envelope"], "tab:envelope"))

    grids = {d: radius_grid([r for r in runs if r.dataset == d]) for d in datasets}
    write(out / "plots/certified-accuracy.csv", to_csv(
        ["dataset", "model", "noise", "training", "sigma", "bound", "radius",
         "certified_accuracy"], list(curve_rows(runs, grids))))
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        for bound in _all_bounds():
            write(out / f"plots/{dataset}-{bound}.csv", bound_plot_csv(mine, bound, grids[dataset]))

    figure_files = {
        "bound-comparison": lambda stem: figures.bound_comparison(stem),
        "radius-vs-pa": lambda stem: figures.radius_vs_pa(stem, fig6_sigma),
    }
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        grid = grids[dataset]
        title = f"{dataset} ({settings_text(mine)})"
        figure_files[f"{dataset}-certified-accuracy"] = (
            lambda stem, m=mine, g=grid, t=title: figures.accuracy_per_sigma(stem, m, g, t))
        figure_files[f"{dataset}-comparison"] = (
            lambda stem, m=mine, g=grid, t=title: figures.bound_comparison_per_sigma(stem, m, g, t))
        figure_files[f"{dataset}-envelope"] = (
            lambda stem, m=mine, g=grid, t=title: figures.envelope(stem, m, g, t))
    for name, draw in figure_files.items():
        stem = out / "figures" / name
        for path in draw(stem):
            log(f"wrote {path}")
            written.append(path)

    for name in (*TABLES, *figure_files):
        write(out / "captions" / f"{name}.rst", caption[name] + "\n")

    metrics_file = Path(metrics_path) if metrics_path else out / "metrics.json"
    write(metrics_file, json.dumps(metrics(rows, radii), indent=2) + "\n")
    log(f"done: {len(runs)} certify file(s), {len(written)} outputs ({stats})")
    return written


def parse_radii(text: str) -> list[float]:
    try:
        radii = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise L1CertError(f"--radii must be comma-separated numbers, got {text!r}") from None
    if not radii:
        raise L1CertError("--radii is empty")
    return radii
