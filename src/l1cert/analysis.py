"""The statistics of the paper's tables, from runs read back (`l1cert.runs`).

Approximate certified accuracy (the paper's Eq. 3) is the fraction of test points whose
prediction is correct and whose certified radius is at least r; ACR is the mean radius over
correct points (Zhai et al. 2020); the envelope is the best accuracy over σ at each radius.
Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from l1cert.layout import all_bounds
from l1cert.runs import CertifiedRun, training_rank


def certified_accuracy(radius: np.ndarray, correct: np.ndarray, radii) -> np.ndarray:
    """Eq. 3: mean over points of correct·1(radius ≥ r), for each r (NaN radii never count)."""
    certified = np.sort(radius[correct & ~np.isnan(radius)])
    radii = np.asarray(radii, dtype=float)
    at_least = len(certified) - np.searchsorted(certified, radii, side="left")
    return at_least / len(radius)


def average_certified_radius(radius: np.ndarray, correct: np.ndarray) -> float:
    """ACR (Zhai et al. 2020): mean over all points of radius·correct (wrong or abstained: 0)."""
    # summed as fractions: radii near the float maximum (a published file) must not overflow
    radius = np.where(correct, np.nan_to_num(radius, nan=0.0), 0.0)
    return float((radius / max(radius.size, 1)).sum()) if radius.size else float("nan")


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


def radius_axis(runs: Sequence[CertifiedRun], points: int = 400) -> np.ndarray:
    """The radii of a plot's x axis: round steps from 0 just past the largest certified radius."""
    largest = max(
        (float(np.nanmax(r, initial=0.0)) for run in runs for r in run.bound_radii.values()),
        default=0.0,
    )
    largest = max(largest, 1e-3)
    raw = largest / points
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    # rounded off float noise; a whole step needs none (and radii near the float maximum
    # would overflow a rounding to ten decimals)
    return np.round(np.arange(0.0, largest + step, step), 10 if step < 1 else 0)


def settings_text(runs: Sequence[CertifiedRun]) -> str:
    """'n = 10000, n0 = 100, α = 0.001, fixed sampling' (sets where the files differ); exact
    runs add 'exact: L = {55} noisy copies per point', foreign ones that they were read as
    given, partial ones how many of their points they hold."""
    from l1cert.sampling import MODES

    def values(runs, attr, form="{:g}"):
        found = sorted({getattr(r, attr) for r in runs if getattr(r, attr) is not None})
        if not found:
            return "unknown"
        shown = ", ".join(form.format(v) for v in found)
        return shown if len(found) == 1 else "{" + shown + "}"

    ours = [r for r in runs if not r.foreign]
    sampled = [r for r in ours if MODES[r.sampling].estimates]
    exact = [r for r in ours if not MODES[r.sampling].estimates]
    foreign = [r for r in runs if r.foreign]
    parts = []
    if sampled or not (exact or foreign):
        varies = any(MODES[r.sampling].varies_n for r in sampled)
        cap = " (the cap of sequential sampling)" if varies else ""
        parts.append(
            f"n = {values(sampled, 'n')}{cap}, n0 = {values(sampled, 'n0')}, "
            f"α = {values(sampled, 'alpha')}, {values(sampled, 'sampling', '{}')} sampling"
        )
    if exact:
        parts.append(f"exact: L = {values(exact, 'n')} noisy copies per point")
    if foreign:
        parts.append(
            "foreign files (Cohen et al.'s TSVs, published results) read as given: their radii "
            "are their authors' code's and were not re-derived"
        )
    bracketed = sorted({b for r in runs for b in r.bracketed})
    if bracketed:
        from l1cert.labels import bound_label

        parts.append(
            f"{'; '.join(map(bound_label, bracketed))}: radii checked to lie within what their "
            "counts allow in the box, not recomputed (that needs the test points; certify "
            "recomputes them on resume)"
        )
    partial = [r for r in runs if r.partial]
    if partial:
        parts.append(
            "partial results: "
            + ", ".join(f"{r.model} holds {r.points} of {r.total_points} points" for r in partial)
        )
    return "; ".join(parts)
