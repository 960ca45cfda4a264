"""The paper's figures, headless (matplotlib Agg), each written as PNG and PDF.

Radii come from `l1cert.certificates` and curves from `l1cert.analysis`, so a figure shows exactly
what the tables say.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from l1cert import certificates  # noqa: E402
from l1cert.analysis import envelopes  # noqa: E402
from l1cert.names import TRAININGS  # noqa: E402
from l1cert.noise import NOISES  # noqa: E402
from l1cert.runs import CertifiedRun  # noqa: E402
from l1cert.utils import atomic_path  # noqa: E402

RADIUS_LABEL = "ℓ1 radius r (pixel units, inputs in [0, 1])"
ACCURACY_LABEL = "approximate certified accuracy"


def _style(bound: str) -> dict:
    """Colour, line style and legend label of a bound's curves (l1cert.certificates.BOUNDS)."""
    entry = certificates.BOUNDS[bound]
    return {"color": entry.color, "ls": entry.style, "label": entry.label}


def save(fig, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf atomically; returns both paths."""
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def bound_comparison(stem: Path, resolution: int = 400) -> list[Path]:
    """Fig. 4: which bound is larger over the admissible (p̲A, p̄B) triangle."""
    axis = (np.arange(resolution) + 0.5) / resolution
    pa, pb = np.meshgrid(axis, axis)
    admissible = (pb < pa) & (pa + pb <= 1.0)
    region = np.where(admissible, np.where(certificates.thm1_beats_dp(pa, pb), 2, 1), 0)
    fig, ax = plt.subplots(figsize=(4.8, 4.2))
    ax.imshow(
        region,
        origin="lower",
        extent=(0, 1, 0, 1),
        interpolation="nearest",
        cmap=ListedColormap(["whitesmoke", "tab:green", "tab:red"]),
        vmin=0,
        vmax=2,
    )
    edge = np.linspace(0.5, 1.0, 200)
    ax.plot(edge, (1 - edge) ** 2 / edge, "k--", lw=1, label="Remark 2: p̄B = (1 − p̲A)²/p̲A")
    ax.set_xlabel("p̲A (lower bound of the top class probability)")
    ax.set_ylabel("p̄B (upper bound of the runner-up probability)")
    ax.set_title("Theorem 1 against the DP bound (Eq. 1)")
    ax.legend(
        handles=[
            Patch(color="tab:red", label="Theorem 1 larger"),
            Patch(color="tab:green", label="DP bound at least as large"),
            Patch(color="whitesmoke", label="not admissible (p̄B ≥ p̲A or sum > 1)"),
            *ax.get_lines(),
        ],
        loc="upper left",
        fontsize=7,
    )
    return save(fig, stem)


def radius_vs_pa(stem: Path, sigma: float) -> list[Path]:
    """Fig. 6: the radius of each method against p̲A, noises matched by standard deviation σ."""
    pa = np.linspace(0.5, 0.9999, 600)
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    for noise, bound in certificates.curve_methods():
        scale = NOISES[noise](sigma).scale
        style = _style(bound)
        style["label"] += f" (scale {scale:.3g})"
        ax.plot(pa, certificates.radius(bound, noise, scale, pa), **style)
    ax.set_xlabel("p̲A (lower bound of the top class probability)")
    ax.set_ylabel(RADIUS_LABEL)
    ax.set_title(f"Certified radius against p̲A, σ = {sigma:g}")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, stem)


# --- certified accuracy curves ------------------------------------------------------------


def _trainings(runs: Sequence[CertifiedRun]) -> list[str]:
    present = {r.training for r in runs}
    return [t for t in TRAININGS if t in present] + sorted(present - set(TRAININGS))


def _sigmas(runs: Sequence[CertifiedRun]) -> list:
    return sorted({r.sigma for r in runs}, key=lambda s: (s is None, s or 0.0))


def _grid_of_axes(rows: int, cols: int, title: str):
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.7 * rows + 0.5), squeeze=False, sharex=True, sharey=True
    )
    fig.suptitle(title, fontsize=10)
    for ax in axes.flat:
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(RADIUS_LABEL, fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(ACCURACY_LABEL, fontsize=8)
    return fig, axes


def _finish(ax, empty_text: str = "no certify file") -> None:
    if ax.get_lines():
        ax.legend(fontsize=7)
    else:
        ax.text(
            0.5, 0.5, empty_text, ha="center", va="center", transform=ax.transAxes, color="gray"
        )


def accuracy_per_sigma(
    stem: Path, runs: Sequence[CertifiedRun], grid: np.ndarray, title: str
) -> list[Path]:
    """One panel per training type × method, one curve per σ."""
    trainings, sigmas = _trainings(runs), _sigmas(runs)
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(sigmas), 1)))
    methods = certificates.panel_methods()
    fig, axes = _grid_of_axes(
        len(trainings), len(methods), f"Certified accuracy for each σ: {title}"
    )
    for row, training in enumerate(trainings):
        for col, (noise, bound) in enumerate(methods):
            ax = axes[row, col]
            ax.set_title(f"{training}: {_style(bound)['label']}", fontsize=8)
            for run in runs:
                if run.training == training and run.noise == noise and bound in run.bounds:
                    label = f"σ = {run.sigma:g}" if run.sigma is not None else run.model
                    ax.plot(
                        grid,
                        run.accuracy(bound, grid),
                        color=colors[sigmas.index(run.sigma)],
                        label=label,
                    )
            _finish(ax)
    return save(fig, stem)


def bound_comparison_per_sigma(
    stem: Path, runs: Sequence[CertifiedRun], grid: np.ndarray, title: str
) -> list[Path]:
    """Figs. 7-8: at each σ the Laplace model's bounds beside the Gaussian and uniform models."""
    trainings, sigmas = _trainings(runs), _sigmas(runs)
    fig, axes = _grid_of_axes(len(trainings), len(sigmas), f"Bounds compared: {title}")
    for row, training in enumerate(trainings):
        for col, sigma in enumerate(sigmas):
            ax = axes[row, col]
            ax.set_title(
                f"{training}, σ = {sigma:g}" if sigma is not None else training, fontsize=8
            )
            for run in runs:
                if run.training != training or run.sigma != sigma:
                    continue
                for bound in run.bounds:
                    ax.plot(grid, run.accuracy(bound, grid), **_style(bound))
            _finish(ax)
    return save(fig, stem)


def envelope(stem: Path, runs: Sequence[CertifiedRun], grid: np.ndarray, title: str) -> list[Path]:
    """Per training type, the best curve over σ of each bound."""
    trainings = _trainings(runs)
    fig, axes = _grid_of_axes(1, len(trainings), f"Envelope over σ: {title}")
    for env in envelopes(runs, grid):
        ax = axes[0, trainings.index(env.training)]
        ax.plot(grid, env.accuracy, **_style(env.bound))
    for ax, training in zip(axes[0], trainings, strict=True):
        ax.set_title(training, fontsize=8)
        _finish(ax)
    return save(fig, stem)


def cost(stem: Path, runs: Sequence[CertifiedRun], radius: float, title: str) -> list[Path]:
    """Certified accuracy at `radius` against forward passes per point, one marker per model
    and bound (σ written beside it), per training type: what each method buys for its cost."""
    trainings = _trainings(runs)
    fig, axes = plt.subplots(
        1, len(trainings), figsize=(4.6 * len(trainings), 3.8), squeeze=False, sharey=True
    )
    fig.suptitle(f"Certified accuracy at r = {radius:g} against cost: {title}", fontsize=10)
    for ax, training in zip(axes[0], trainings, strict=True):
        seen = set()
        for run in runs:
            passes = float(np.mean(run.passes))
            if run.training != training or not np.isfinite(passes):
                continue
            for bound in run.bounds:
                style = _style(bound)
                label = style["label"] if bound not in seen else None
                seen.add(bound)
                y = float(run.accuracy(bound, [radius])[0])
                ax.scatter(passes, y, color=style["color"], marker="o", s=22, label=label)
                if run.sigma is not None:
                    ax.annotate(f"{run.sigma:g}", (passes, y), fontsize=6, xytext=(3, 2),
                                textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, which="both")
        ax.set_title(training, fontsize=8)
        ax.set_xlabel("forward passes per point (mean, log scale)", fontsize=8)
        if seen:
            ax.legend(fontsize=6)
        else:
            ax.text(0.5, 0.5, "no cost recorded", ha="center", va="center",
                    transform=ax.transAxes, color="gray")  # fmt: skip
    axes[0, 0].set_ylabel(f"{ACCURACY_LABEL} at r = {radius:g}", fontsize=8)
    return save(fig, stem)
