"""The report: tables (CSV, Markdown, LaTeX), captions, metrics, plot data and figures.

Rendering only: the numbers come from `l1cert.analysis`, the figures from `l1cert.figures`.
`build_report` checks every input and every output path before it writes anything, renders
into a staging directory, and publishes the files as one transaction (`l1cert.transaction`:
a journal, then renames), so a report that fails leaves the previous one as it was, and one
killed while publishing is finished by the next run into the same folder.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from l1cert.analysis import (
    Envelope,
    Row,
    accuracy_rows,
    all_bounds,
    average_certified_radius,
    cost,
    envelopes,
    radius_grid,
    settings_text,
)
from l1cert.certificates import BOUNDS, curve_methods, panel_methods
from l1cert.config import ReportConfig
from l1cert.labels import bound_parts, noise_label, training_label
from l1cert.layout import HEADLINE, SUMMARY, TABLES, expected_outputs
from l1cert.names import check_plain_name
from l1cert.noise import NOISES
from l1cert.publish import check_paths, publish, recover
from l1cert.runs import CertifiedRun, Naming, log, log_reads, read_runs, training_rank
from l1cert.utils import L1CertError, json_text, parse_radii

# What names one curve (a model under one bound) in the tables and plot data.
CURVE_IDENTITY = ("dataset", "model", "noise", "training", "sigma", "bound")

# --- tables -------------------------------------------------------------------------------


def _radius_label(r: float) -> str:
    return f"{r:g}"


def _sigma_text(run: CertifiedRun | None) -> str:
    if run is None:
        return "-"
    return f"{run.sigma:g}" if run.sigma is not None else run.model


COST = ("passes_mean", "passes_total", "certify_seconds", "train_seconds")


def accuracy_table(rows: Sequence[Row], radii: Sequence[float]):
    """(header, machine rows, display rows); display shows percentages. Every row carries its
    cost (`Row.cost`) beside its accuracy."""
    header = [*CURVE_IDENTITY, "points", "total_points", "clean_accuracy", "abstention_rate",
              "acr"]  # fmt: skip
    header += [f"r={_radius_label(r)}" for r in radii] + list(COST)
    machine, display = [], []
    for row in rows:
        run = row.run
        ident = [
            run.dataset,
            run.model,
            run.noise,
            run.training,
            "" if run.sigma is None else f"{run.sigma:g}",
            row.bound,
            str(run.points),
            str(run.total_points if run.total_points is not None else run.points),
        ]
        stats = [row.clean_accuracy, row.abstention_rate]
        cost = [row.cost[c] for c in COST]
        machine.append(
            ident
            + [f"{v:.6g}" for v in (*stats, row.acr, *row.accuracy)]
            + [_number(v) for v in cost]
        )
        display.append(
            ident
            + [f"{100 * v:.1f}" for v in stats]
            + [f"{row.acr:.3f}"]
            + [f"{100 * v:.1f}" for v in row.accuracy]
            + [_shown(v) for v in cost]
        )
    return header, machine, display


def _number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6g}"


def _shown(value: float) -> str:
    """A cost for people: thousands separated, seconds to one decimal ('-': not recorded)."""
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def envelope_table(envs: Sequence[Envelope], radii: Sequence[float]):
    """Machine form is long (one line per radius); display form is wide, σ in parentheses.
    The cost columns are those of all the σ models of the row together."""
    machine_header = [
        "dataset",
        "training",
        "bound",
        "radius",
        "certified_accuracy",
        "sigma",
        "model",
        *COST,
    ]
    machine = [
        [
            e.dataset,
            e.training,
            e.bound,
            f"{r:g}",
            f"{a:.6g}",
            "" if b is None or b.sigma is None else f"{b.sigma:g}",
            "" if b is None else b.model,
            *(_number(e.cost[c]) for c in COST),
        ]
        for e in envs
        for r, a, b in zip(radii, e.accuracy, e.best, strict=True)
    ]
    display_header = ["dataset", "training", "bound"] + [f"r={_radius_label(r)}" for r in radii]
    display = [
        [e.dataset, e.training, e.bound]
        + [
            f"{100 * a:.1f} ({_sigma_text(b)})" if b is not None else f"{100 * a:.1f}"
            for a, b in zip(e.accuracy, e.best, strict=True)
        ]
        + [_shown(e.cost[c]) for c in COST]
        for e in envs
    ]
    display_header += list(COST)
    return machine_header, machine, display_header, display


def to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells):
        cells = (" ".join(str(c).split()).replace("|", "\\|") for c in cells)  # one line each
        return "| " + " | ".join(cells) + " |"

    align = [
        "---" if i < 3 or not rows or not _numeric(rows[0][i]) else "---:"
        for i in range(len(header))
    ]
    return "\n".join([line(header), "| " + " | ".join(align) + " |", *map(line, rows)]) + "\n"


def _numeric(text: str) -> bool:
    try:
        float(str(text).split(" ")[0].replace(",", ""))
    except ValueError:
        return False
    return True


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "σ": r"$\sigma$",
    "α": r"$\alpha$",
    "λ": r"$\lambda$",
    "ℓ": r"$\ell$",
    "×": r"$\times$",
    "·": r"$\cdot$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "−": r"$-$",
    "–": "--",
    "—": "---",
    "á": r"\'{a}",
    "č": r"\v{c}",
}


def latex_escape(text: str) -> str:
    """`text` set as LaTeX would print it: its special characters escaped, the Greek letters
    and symbols of the captions in math mode, ℓ1 as $\\ell_1$."""
    parts = str(text).split("ℓ1")
    return r"$\ell_1$".join("".join(_LATEX_SPECIAL.get(ch, ch) for ch in p) for p in parts)


def to_latex(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    caption: str,
    label: str,
    over: Sequence[tuple[int, int, str]] = (),
    groups: dict[int, str] | None = None,
) -> str:
    """A booktabs table (needs \\usepackage{booktabs} in the document): no vertical rules,
    every cell escaped. `over`: headers above the column header, each (first column, columns,
    text) with a rule under it; `groups`: {row: title} for the rows that start a group, each
    group under its title in italics."""
    spec = "".join("r" if rows and _numeric(rows[0][i]) else "l" for i in range(len(header)))
    head = []
    if over:
        cells, rules, column = [], [], 0
        for first, span, text in over:
            cells += [""] * (first - column) + [
                rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(text)}}}"
            ]
            rules.append(rf"\cmidrule(lr){{{first + 1}-{first + span}}}")
            column = first + span
        cells += [""] * (len(header) - column)
        head = [" & ".join(cells) + r" \\", "".join(rules)]
    body = []
    for i, row in enumerate(rows):
        if groups and i in groups:
            if i:
                body.append(r"\addlinespace")
            title = latex_escape(groups[i])
            body.append(rf"\multicolumn{{{len(header)}}}{{l}}{{\textit{{{title}}}}} \\")
        body.append(" & ".join(latex_escape(c) for c in row) + r" \\")
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\setlength{\tabcolsep}{4pt}",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        *head,
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


# --- tables for a paper: display names, accuracy apart from cost ---------------------------


@dataclass(frozen=True)
class PaperTable:
    """A table as `to_latex` sets it: rows in groups (a training type, and its dataset where
    the report spans several) under their titles, the cells that repeat the row above's
    identity left blank."""

    header: list[str]
    rows: list[list[str]]
    over: list[tuple[int, int, str]]
    groups: dict[int, str]

    def latex(self, caption: str, label: str) -> str:
        return to_latex(self.header, self.rows, caption, label, self.over, self.groups)


def _paper_table(header, cells, titles, identity: int, over) -> PaperTable:
    """`cells` by group title (in order), the first `identity` cells of a row left blank
    where they repeat the row above's within its group."""
    rows, groups = [], {}
    for i, (row, title) in enumerate(zip(cells, titles, strict=True)):
        above = None if i == 0 or titles[i - 1] != title else cells[i - 1]
        if above is None:
            groups[i] = title
        same = 0
        while above is not None and same < identity and row[same] == above[same]:
            same += 1
        rows.append([""] * same + row[same:])
    return PaperTable(header, rows, over, groups)


def _group_title(dataset: str, training: str, datasets: int) -> str:
    return f"{dataset}, {training_label(training)}" if datasets > 1 else training_label(training)


def _needs_model(keys: Sequence[tuple]) -> bool:
    """Whether a paper table names each row's model: two rows alike in everything else it
    shows, or a σ unknown (a foreign file's)."""
    return len(set(keys)) < len(keys) or any(k[-1] is None for k in keys)


def paper_accuracy_table(rows: Sequence[Row], radii: Sequence[float]) -> PaperTable:
    """The certified-accuracy table for a paper: per training type, one row per model ×
    bound, in the bounds' order and by σ, named for readers (the noise and the certificate:
    `l1cert.labels`); clean accuracy, ACR and the certified accuracy at each radius, in %.
    Costs are the cost table's."""
    rows = sorted(rows, key=lambda r: (*_run_order(r.run), BOUND_ORDER.index(r.bound),
                                       _sigma_key(r.run.sigma), r.run.model))  # fmt: skip
    datasets = len({r.run.dataset for r in rows})
    model = _needs_model([(r.run.dataset, r.run.training, r.bound, r.run.sigma) for r in rows])
    header = ["Noise", "Certificate", "σ", *(["Model"] if model else []), "Clean", "ACR"]
    header += [_radius_label(r) for r in radii]
    cells = [
        [*bound_parts(row.bound), _sigma_cell(row.run.sigma)]
        + ([row.run.model] if model else [])
        + [_percent(row.clean_accuracy), f"{row.acr:.3f}"]
        + [_percent(a) for a in row.accuracy]
        for row in rows
    ]
    titles = [_group_title(r.run.dataset, r.run.training, datasets) for r in rows]
    over = [(len(header) - len(radii), len(radii), "certified accuracy (%) at ℓ1 radius r")]
    return _paper_table(header, cells, titles, 2, over)


def paper_envelope_table(envs: Sequence[Envelope], radii: Sequence[float]) -> PaperTable:
    """The envelope over σ for a paper: per training type and bound, the best certified
    accuracy (in %) at each radius, and under it in parentheses the σ that achieves it (a
    line of its own keeps the table a text width wide)."""
    envs = sorted(envs, key=lambda e: (e.dataset, training_rank(e.training), e.training,
                                       BOUND_ORDER.index(e.bound)))  # fmt: skip
    datasets = len({e.dataset for e in envs})
    header = ["Noise", "Certificate", *(_radius_label(r) for r in radii)]
    cells = [[*bound_parts(e.bound), *(_percent(a) for a in e.accuracy)] for e in envs]
    titles = [_group_title(e.dataset, e.training, datasets) for e in envs]
    text = "best certified accuracy (%) over σ at ℓ1 radius r (its σ)"
    table = _paper_table(header, cells, titles, 1, [(2, len(radii), text)])
    rows = []
    for row, env in zip(table.rows, envs, strict=True):
        rows.append(row)
        rows.append(["", ""] + [f"({_sigma_text(b)})" if b else "" for b in env.best])
    groups = {2 * i: title for i, title in table.groups.items()}
    return PaperTable(header, rows, table.over, groups)


COST_HEADER = ["dataset", "model", "noise", "training", "sigma", "points", *COST]


def cost_table(runs: Sequence[CertifiedRun]):
    """What each model's certificates cost: (header, machine rows, display rows), ids kept
    (the CSV and Markdown tables), one row per model (its bounds share its certify run)."""
    machine, display = [], []
    for run in runs:
        ident = [run.dataset, run.model, run.noise, run.training,
                 "" if run.sigma is None else f"{run.sigma:g}", str(run.points)]  # fmt: skip
        spent = cost([run])
        machine.append(ident + [_number(spent[c]) for c in COST])
        display.append(ident + [_shown(spent[c]) for c in COST])
    return COST_HEADER, machine, display


def paper_cost_table(runs: Sequence[CertifiedRun]) -> PaperTable:
    """The cost table for a paper: per training type, one row per model: its forward passes
    per point (mean) and in all, and the seconds its certification and its training took
    (as its certify file records them; '--': not recorded)."""
    runs = sorted(runs, key=lambda r: (*_run_order(r), _sigma_key(r.sigma), r.model))
    datasets = len({r.dataset for r in runs})
    model = _needs_model([(r.dataset, r.training, r.noise, r.sigma) for r in runs])
    header = ["Noise", "σ", *(["Model"] if model else []), "per point", "in all", "certify",
              "train"]  # fmt: skip
    cells = []
    for run in runs:
        spent = cost([run])
        cells.append(
            [noise_label(run.noise), _sigma_cell(run.sigma)]
            + ([run.model] if model else [])
            + ["--" if math.isnan(spent[c]) else _shown(spent[c]) for c in COST]
        )
    titles = [_group_title(r.dataset, r.training, datasets) for r in runs]
    first = len(header) - len(COST)
    over = [(first, 2, "forward passes"), (first + 2, 2, "seconds")]
    return _paper_table(header, cells, titles, 1, over)


# The order of the paper tables' rows: the bounds as BOUNDS lists them (the figures' legends'
# order), a noise where its first bound is.
BOUND_ORDER = list(BOUNDS)


def _run_order(run: CertifiedRun) -> tuple:
    first = min((BOUND_ORDER.index(b) for b in NOISES[run.noise].bounds), default=0)
    return run.dataset, training_rank(run.training), run.training, first


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _sigma_key(sigma) -> float:
    return math.inf if sigma is None else sigma


def _sigma_cell(sigma) -> str:
    return "--" if sigma is None else f"{sigma:g}"


# --- captions -----------------------------------------------------------------------------

UNITS = "in pixel units of inputs in [0, 1]"


def captions(
    runs: Sequence[CertifiedRun], radii: Sequence[float], fig6_sigma: float, cost_radius=0.5
) -> dict:
    """Caption text per output name (figure/table stem), for Snakemake report() and papers."""
    stats = settings_text(runs)
    present = {bound for run in runs for bound in run.bounds}
    stats += "".join(  # what an exact bound certifies, wherever one is shown
        f". {BOUNDS[b].label}: {BOUNDS[b].caption}"
        for b in BOUNDS
        if b in present and BOUNDS[b].exact
    )
    grid = ", ".join(f"{r:g}" for r in radii)
    labels = "; ".join(BOUNDS[bound].label for _, bound in curve_methods())
    text = {
        "certified-accuracy": (
            f"Approximate certified accuracy (Eq. 3 of the paper, in %) at l1 radii {grid} "
            f"({UNITS}): the fraction of test points whose smoothed prediction is correct and "
            "whose certified radius under the bound is at least r. One row per model and bound; "
            "clean accuracy is that of the smoothed classifier (abstentions count as wrong), ACR "
            "is the mean over all points of radius times correct (Zhai et al. 2020). The CSV "
            "and Markdown tables add the abstention rate (the fraction of points where the "
            "smoothed classifier abstains) and each model's cost, which the LaTeX table leaves "
            f"to the cost table. Certification: {stats}."
            + (
                " Sequential sampling stops once a point's bucket among these radii is decided, "
                "so its radii pin the bucket, not the value: its ACR is not comparable with "
                "fixed sampling's."
                if any(r.sampling == "sequential" for r in runs)
                else ""
            )
        ),
        "envelope": (
            "Envelope over sigma: for each dataset, training type and bound, the best certified "
            f"accuracy (in %) at each l1 radius ({UNITS}) over all noise levels, with the sigma "
            "that achieves it in parentheses (ties go to the smaller sigma). Certification: "
            f"{stats}."
        ),
        "cost": (
            "What each model's certificates cost (all its bounds share one certification): the "
            "forward passes of the base classifier per test point (mean; the n0 selection "
            "draws included; Monte Carlo sampling pays n0 + n, sequential sampling fewer, DSSN "
            "exactly L) and in all, the wall time in seconds of its certify jobs (summed over "
            "shards) and of its training, as its certify file records them ('-': not "
            "recorded). Seconds depend on where and how the jobs ran (device, threads, jobs "
            "side by side), which the certify files do not all record: compare them within one "
            f"run only. Certification: {stats}."
        ),
        "bound-comparison": (
            "Where Theorem 1 beats the differential-privacy bound of Lecuyer et al.: over pairs "
            "(lower bound of pA, upper bound of pB) with pB < pA and pA + pB <= 1, red marks "
            "pairs where Theorem 1's radius is larger, green where the DP bound "
            "(lambda/2) ln(pA/pB) is at least as large. The dashed line is the boundary from "
            "Remark 2, pB = (1 - pA)^2 / pA. The comparison does not depend on lambda."
        ),
        "radius-vs-pa": (
            f"Certified l1 radius against the lower bound of pA at sigma = {fig6_sigma:g} "
            f"(noises matched by per-coordinate standard deviation): {labels}."
        ),
    }
    for dataset in sorted({r.dataset for r in runs}):
        mine = [r for r in runs if r.dataset == dataset]
        stats = settings_text(mine)
        shown = {b for r in mine for b in r.bounds}
        methods = "; ".join(BOUNDS[b].caption for _, b in panel_methods() if b in shown)
        text[f"{dataset}-certified-accuracy"] = (
            f"{dataset}: approximate certified accuracy against l1 radius r ({UNITS}), one "
            "curve per sigma, one panel per certificate and training type (in the panel's "
            f"corner) that the results hold: {methods}. Certification: {stats}."
        )
        text[f"{dataset}-comparison"] = (
            f"{dataset}: the bounds side by side at each sigma (as in the paper's Figs. 7 and 8): "
            "approximate certified accuracy against l1 radius r "
            f"({UNITS}), one panel per training type (in the panel's corner) and sigma. "
            f"Certification: {stats}."
        )
        text[f"{dataset}-cost"] = (
            f"{dataset}: what each certificate costs for what it certifies: approximate "
            f"certified accuracy at l1 radius {cost_radius:g} against the mean number of forward "
            "passes of the base classifier per test point (selection draws included; log "
            "scale), one marker per model and bound, its colour the bound's and its shape the "
            "model's sigma. Monte Carlo methods pay "
            "n0 + n passes (sequential sampling fewer), DSSN exactly L. "
            f"Certification: {stats}."
        )
        text[f"{dataset}-envelope"] = (
            f"{dataset}: envelope over sigma of the certified accuracy for each bound (the "
            f"best curve over all noise levels at each l1 radius r, {UNITS}), one panel per "
            f"training type. Certification: {stats}."
        )
    return text


# --- outputs ------------------------------------------------------------------------------


def metrics(rows: Sequence[Row], radii: Sequence[float]) -> dict:
    """{'<dataset>/<model>/<bound>': {points, clean_accuracy, abstention_rate, acr,
    certified_accuracy: {'<r>': value}}}: two levels, readable by `dvc metrics show`."""
    return {
        f"{row.run.dataset}/{row.run.model}/{row.bound}": {
            "points": row.run.points,
            "clean_accuracy": round(row.clean_accuracy, 6),
            "abstention_rate": round(row.abstention_rate, 6),
            "acr": round(row.acr, 6),
            "certified_accuracy": {
                _radius_label(r): round(float(a), 6)
                for r, a in zip(radii, row.accuracy, strict=True)
            },
        }
        for row in rows
    }


def summary(runs: Sequence[CertifiedRun], radii: Sequence[float]) -> dict:
    """Every number of the envelopes (`summary-full.json`): per '<training>/<bound>'
    ('<dataset>/<training>/<bound>' where the runs span datasets), the envelope's certified
    accuracy at the report radii (`acc`), the best ACR over σ (`acr`), and what it cost:
    forward passes per point (mean, n0 included), in all, certification and training seconds
    (all the σ models together, as their certify files record them)."""
    found, one_dataset = {}, len({run.dataset for run in runs}) == 1
    for env in envelopes(runs, radii):
        cost = env.cost
        key = f"{env.training}/{env.bound}"
        found[key if one_dataset else f"{env.dataset}/{key}"] = {
            "acc": {
                _radius_label(r): round(float(a), 4)
                for r, a in zip(radii, env.accuracy, strict=True)
            },
            "acr": round(_best_acr(env), 4),
            "passes": _rounded(cost["passes_mean"], 1),
            "passes_total": _rounded(cost["passes_total"], 0),
            "certify_s": _rounded(cost["certify_seconds"], 2),
            "train_s": _rounded(cost["train_seconds"], 2),
        }
    return found


def headline(runs: Sequence[CertifiedRun], radius: float) -> dict[str, dict]:
    """The DVC metric, a few numbers a person reads at a glance: {bound: {'<training>': {acr,
    acc@<radius>, passes}}} ('<dataset>/<training>' where the runs span datasets), each bound
    written as a file of its own so that `dvc metrics show` shows a row per bound and a column
    per training type and number. Per training type, the envelope over σ: the best ACR, the
    best certified accuracy at `radius`, and the forward passes per point (mean over all its σ
    models, n0 included), the cost that does not depend on the machine. Seconds are the full
    summary's and the cost table's."""
    found: dict[str, dict] = {}
    one_dataset = len({run.dataset for run in runs}) == 1
    for env in envelopes(runs, [radius]):
        key = env.training if one_dataset else f"{env.dataset}/{env.training}"
        found.setdefault(env.bound, {})[key] = {
            "acr": round(_best_acr(env), 3),
            f"acc@{_radius_label(radius)}": round(float(env.accuracy[0]), 3),
            "passes": None if math.isnan(passes := env.cost["passes_mean"]) else round(passes),
        }
    return found


def _best_acr(env: Envelope) -> float:
    return max(
        average_certified_radius(m.bound_radii[env.bound], m.hits[env.bound]) for m in env.members
    )


def _rounded(value: float, digits: int):
    """JSON has no NaN: a cost that is not recorded is null."""
    return None if math.isnan(value) else round(value, digits)


def curve_rows(runs: Sequence[CertifiedRun], grids: dict[str, np.ndarray]):
    """Long rows (dataset, model, noise, training, sigma, bound, radius, certified_accuracy)."""
    for run in runs:
        grid = grids[run.dataset]
        for bound in run.bound_radii:
            for r, a in zip(grid, run.accuracy(bound, grid), strict=True):
                yield [
                    run.dataset,
                    run.model,
                    run.noise,
                    run.training,
                    "" if run.sigma is None else f"{run.sigma:g}",
                    bound,
                    f"{r:g}",
                    f"{a:.6g}",
                ]


def bound_plot_csv(runs: Sequence[CertifiedRun], bound: str, grid: np.ndarray) -> str:
    """Wide per-bound curves for `dvc plots`: radius, then one column per model (σ)."""
    members = [r for r in runs if bound in r.bound_radii]
    header = ["radius"] + [m.model.replace(".", "_") for m in members]
    curves = [m.accuracy(bound, grid) for m in members]
    rows = [[f"{r:g}", *(f"{c[i]:.6g}" for c in curves)] for i, r in enumerate(grid)]
    return to_csv(header, rows)


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: ReportConfig | None = None,
    metrics_path: str | Path | None = None,
    naming: Naming | None = None,
    partial: bool = False,
) -> list[Path]:
    """Tables, figures, plot data, captions and metrics from certify files; returns paths.

    `config`: the radii of the tables and metrics, and the figures' settings (ReportConfig).
    `naming` names Cohen et al.'s six-column files and published result directories (rs4a's
    layout), whose radii are those of its `bound` (see `l1cert.runs`); `partial` accepts
    shards and files missing points, which every caption then says.
    Every input is read and every output path checked (plain names, inside the out dir, none
    of them an input) before anything is written; the report then takes the out dir as one
    transaction (`l1cert.publish`): readers find the old report or the new one, never a mix.
    """
    config, naming = config or ReportConfig(), naming or Naming()
    config.validate()
    radii = parse_radii(config.radii)
    out = Path(out_dir)
    metrics_file = Path(metrics_path) if metrics_path else out / "metrics.json"
    for target in (out, metrics_file.parent):
        if target.exists() and not target.is_dir():
            raise L1CertError(f"{target} is a file, not a directory")
    if metrics_file.is_dir():
        raise L1CertError(f"--metrics {metrics_file} is a directory, not a file")
    recover(out)  # a report killed while publishing is finished before anything else
    runs = read_runs(paths, naming, partial, quiet=True)
    datasets = sorted({r.dataset for r in runs})
    for name in datasets:  # read_all checked them; this function builds paths from them
        check_plain_name("dataset", name)
    targets = expected_outputs(out, datasets, metrics_path)
    check_paths(out, targets, metrics_path, [Path(p) for p in paths])

    def render(stage: Path, metrics_stage: Path) -> list[Path]:  # under the out dir's lock
        log_reads(runs)  # all checked, the folder ours: an error before is stderr's only line
        files = _render(runs, radii, config.fig6_sigma, stage, config.cost_radius)
        metrics_stage.write_text(json_text(metrics(accuracy_rows(runs, radii), radii)))
        return [*(stage / f for f in files), metrics_stage]

    written = publish(out, targets, metrics_file, render)
    for target in written:
        log(f"wrote {target}")
    log(f"done: {len(runs)} certify file(s), {len(written)} outputs ({settings_text(runs)})")
    return written


def _render(
    runs: list[CertifiedRun], radii: list[float], fig6_sigma: float, out: Path, cost_radius
) -> list[str]:
    """Write every table, plot, figure and caption under `out`; return their relative paths."""
    from l1cert import figures  # matplotlib only when figures are drawn

    datasets = sorted({r.dataset for r in runs})
    written: list[str] = []

    def write(name: str, text: str):
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(name)

    rows = accuracy_rows(runs, radii)
    write(SUMMARY, json_text(summary(runs, radii)))
    headlines = headline(runs, cost_radius)
    for bound in all_bounds():  # a bound the runs lack: an empty row
        write(f"{HEADLINE}/{bound}.json", json_text(headlines.get(bound, {})))
    header, machine, display = accuracy_table(rows, radii)
    caption = captions(runs, radii, fig6_sigma, cost_radius)
    write("tables/certified-accuracy.csv", to_csv(header, machine))
    write("tables/certified-accuracy.md", to_markdown(header, display))
    write(
        "tables/certified-accuracy.tex",
        paper_accuracy_table(rows, radii).latex(
            caption["certified-accuracy"], "tab:certified-accuracy"
        ),
    )

    envs = envelopes(runs, radii)
    m_header, m_rows, d_header, d_rows = envelope_table(envs, radii)
    write("tables/envelope.csv", to_csv(m_header, m_rows))
    write("tables/envelope.md", to_markdown(d_header, d_rows))
    write(
        "tables/envelope.tex",
        paper_envelope_table(envs, radii).latex(caption["envelope"], "tab:envelope"),
    )
    c_header, c_machine, c_display = cost_table(runs)
    write("tables/cost.csv", to_csv(c_header, c_machine))
    write("tables/cost.md", to_markdown(c_header, c_display))
    write("tables/cost.tex", paper_cost_table(runs).latex(caption["cost"], "tab:cost"))

    grids = {d: radius_grid([r for r in runs if r.dataset == d]) for d in datasets}
    write(
        "plots/certified-accuracy.csv",
        to_csv([*CURVE_IDENTITY, "radius", "certified_accuracy"], list(curve_rows(runs, grids))),
    )
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        for bound in all_bounds():
            write(f"plots/{dataset}-{bound}.csv", bound_plot_csv(mine, bound, grids[dataset]))

    figure_files = {
        "bound-comparison": lambda stem: figures.bound_comparison(stem),
        "radius-vs-pa": lambda stem: figures.radius_vs_pa(stem, fig6_sigma),
    }
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        grid = grids[dataset]
        title = dataset  # the settings are the captions' to state
        figure_files[f"{dataset}-certified-accuracy"] = lambda stem, m=mine, g=grid, t=title: (
            figures.accuracy_per_sigma(stem, m, g, t)
        )
        figure_files[f"{dataset}-comparison"] = lambda stem, m=mine, g=grid, t=title: (
            figures.bound_comparison_per_sigma(stem, m, g, t)
        )
        figure_files[f"{dataset}-envelope"] = lambda stem, m=mine, g=grid, t=title: (
            figures.envelope(stem, m, g, t)
        )
        figure_files[f"{dataset}-cost"] = lambda stem, m=mine, t=title: figures.cost(
            stem, m, cost_radius, t
        )
    (out / "figures").mkdir(exist_ok=True)
    for name, draw in figure_files.items():
        for path in draw(out / "figures" / name):
            written.append(str(path.relative_to(out)))

    for name in (*TABLES, *figure_files):
        write(f"captions/{name}.rst", caption[name] + "\n")
    return written
