"""The report's numbers for machines: the per-model metrics, the envelopes' summary, the DVC
headline per bound, and the curves as plot data."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from l1cert.analysis import Envelope, Row, average_certified_radius, envelopes
from l1cert.runs import CertifiedRun
from l1cert.table_formats import to_csv
from l1cert.tables import radius_label


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
                radius_label(r): round(float(a), 6)
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
                radius_label(r): round(float(a), 4)
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
            f"acc@{radius_label(radius)}": round(float(env.accuracy[0]), 3),
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


def curve_rows(runs: Sequence[CertifiedRun], radius_axes: dict[str, np.ndarray]):
    """Long rows (dataset, model, noise, training, sigma, bound, radius, certified_accuracy)."""
    for run in runs:
        radius_axis = radius_axes[run.dataset]
        for bound in run.bound_radii:
            for r, a in zip(radius_axis, run.accuracy(bound, radius_axis), strict=True):
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


def bound_plot_csv(runs: Sequence[CertifiedRun], bound: str, radius_axis: np.ndarray) -> str:
    """Wide per-bound curves for `dvc plots`: radius, then one column per model (σ)."""
    members = [r for r in runs if bound in r.bound_radii]
    header = ["radius"] + [m.model.replace(".", "_") for m in members]
    curves = [m.accuracy(bound, radius_axis) for m in members]
    rows = [[f"{r:g}", *(f"{c[i]:.6g}" for c in curves)] for i, r in enumerate(radius_axis)]
    return to_csv(header, rows)
