"""The captions of the report's tables and figures: what each shows, how the run certified
(from the certify files' own settings), and what an exact bound certifies."""

from __future__ import annotations

from collections.abc import Sequence

from l1cert.analysis import settings_text
from l1cert.bounds import BOUNDS, curve_methods, panel_methods
from l1cert.runs import CertifiedRun
from l1cert.sampling import MODES

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
                if any(r.sampling in MODES and MODES[r.sampling].varies_n for r in runs)
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
