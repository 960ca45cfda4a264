"""The report's tables: certified accuracy per model and bound, the envelope over σ, and what
each model cost, each in a machine form (CSV: ids, full precision), a display form
(Markdown: percentages) and a paper form (LaTeX: display names, accuracy apart from cost)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from l1cert import bounds
from l1cert.analysis import Envelope, Row, cost
from l1cert.labels import bound_parts, noise_label, training_label
from l1cert.runs import CertifiedRun, training_rank
from l1cert.table_formats import to_latex

# What names one curve (a model under one bound) in the tables and plot data.
CURVE_IDENTITY = ("dataset", "model", "noise", "training", "sigma", "bound")

# --- tables -------------------------------------------------------------------------------


def radius_label(r: float) -> str:
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
    header += [f"r={radius_label(r)}" for r in radii] + list(COST)
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
    display_header = ["dataset", "training", "bound"] + [f"r={radius_label(r)}" for r in radii]
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
    rows = sorted(rows, key=lambda r: (*_run_order(r.run), _bound_rank(r.bound),
                                       _sigma_key(r.run.sigma), r.run.model))  # fmt: skip
    datasets = len({r.run.dataset for r in rows})
    model = _needs_model([(r.run.dataset, r.run.training, r.bound, r.run.sigma) for r in rows])
    header = ["Noise", "Certificate", "σ", *(["Model"] if model else []), "Clean", "ACR"]
    header += [radius_label(r) for r in radii]
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
                                       _bound_rank(e.bound)))  # fmt: skip
    datasets = len({e.dataset for e in envs})
    header = ["Noise", "Certificate", *(radius_label(r) for r in radii)]
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


# The order of the paper tables' rows: the bounds as the registry lists them (the figures'
# legends' order; read at each call, so a bound added later has its place), a model where its
# first bound is; a bound the registry no longer has (an older file's) last.
def _bound_rank(bound: str) -> int:
    order = list(bounds.BOUNDS)
    return order.index(bound) if bound in order else len(order)


def _run_order(run: CertifiedRun) -> tuple:
    first = min((_bound_rank(b) for b in run.bounds), default=0)
    return run.dataset, training_rank(run.training), run.training, first


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _sigma_key(sigma) -> float:
    return math.inf if sigma is None else sigma


def _sigma_cell(sigma) -> str:
    return "--" if sigma is None else f"{sigma:g}"
