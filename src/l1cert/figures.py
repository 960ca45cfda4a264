"""The paper's figures, headless (matplotlib Agg), each written as PNG and PDF.

Radii come from `l1cert.bounds` and curves from `l1cert.analysis`, so a figure shows exactly
what the tables say. Every figure fits a paper's text width (`TEXT_WIDTH`, the PDF's width) with
no text under 7 pt at that size: more panels wrap to more rows, one legend below the panels
serves them all, titles are short (the captions `l1cert.captions` writes explain), and a
noise or training the runs do not have gets no panel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from l1cert import bounds  # noqa: E402
from l1cert.analysis import envelopes  # noqa: E402
from l1cert.labels import bound_label, training_label  # noqa: E402
from l1cert.names import TRAININGS  # noqa: E402
from l1cert.noise import NOISES  # noqa: E402
from l1cert.runs import CertifiedRun  # noqa: E402
from l1cert.utils import atomic_path  # noqa: E402

RADIUS_LABEL = "ℓ1 radius r"  # in [0, 1] pixel units, as the captions say
ACCURACY_LABEL = "certified accuracy"
TEXT_WIDTH = 7.0  # inches (504 pt): a two-column paper's text width, a one-column one's less
MAX_COLUMNS = 4  # panels side by side; more wrap to the next row
MIN_FONT = 7.0  # points, at the figure's printed size
# Sizes at the printed size: 7 pt ticks and legends, 8 pt labels and panel titles.
PAPER_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "figure.labelsize": 8,
    "lines.linewidth": 1.2,
    "axes.titlepad": 3,
    "legend.frameon": False,
}


def _style(bound: str) -> dict:
    """Colour, line style and legend label of a bound's curves (l1cert.bounds.BOUNDS)."""
    entry = bounds.BOUNDS[bound]
    return {"color": entry.color, "ls": entry.style, "label": bound_label(bound)}


@contextmanager
def paper_style():
    """matplotlib's settings for the figures drawn (and saved) inside."""
    with plt.rc_context(PAPER_STYLE):
        yield


def _paper(draw: Callable) -> Callable:
    """Draw (and save) the figure in the paper's style."""

    def drawn(*args, **kwargs):
        with paper_style():
            return draw(*args, **kwargs)

    drawn.__name__, drawn.__doc__ = draw.__name__, draw.__doc__
    return drawn


def save(fig, stem: Path) -> list[Path]:
    """Write stem.png and stem.pdf atomically; returns both paths. The figure's layout keeps
    everything inside it, so the PDF is exactly the figure's size."""
    paths = []
    for fmt in ("png", "pdf"):
        path = Path(f"{stem}.{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=200)
        paths.append(path)
    plt.close(fig)
    return paths


@_paper
def bound_comparison(stem: Path, resolution: int = 400) -> list[Path]:
    """Fig. 4: which bound is larger over the admissible (p̲A, p̄B) triangle."""
    axis = (np.arange(resolution) + 0.5) / resolution
    pa, pb = np.meshgrid(axis, axis)
    admissible = (pb < pa) & (pa + pb <= 1.0)
    region = np.where(admissible, np.where(bounds.thm1_beats_dp(pa, pb), 2, 1), 0)
    fig, ax = plt.subplots(figsize=(3.6, 3.4), layout="constrained")
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
    ax.set_xlabel("p̲A (lower bound, top class)")
    ax.set_ylabel("p̄B (upper bound, runner-up)")
    ax.set_title("Theorem 1 against the DP bound")
    ax.legend(  # in the upper left, where no pair is admissible (p̄B ≥ p̲A)
        handles=[
            Patch(color="tab:red", label="Theorem 1 larger"),
            Patch(color="tab:green", label="DP bound at least as large"),
            Patch(facecolor="whitesmoke", edgecolor="gray", label="not admissible"),
            *ax.get_lines(),
        ],
        loc="upper left",
    )
    return save(fig, stem)


@_paper
def radius_vs_pa(stem: Path, sigma: float) -> list[Path]:
    """Fig. 6: the radius of each method against p̲A, noises matched by standard deviation σ."""
    pa = np.linspace(0.5, 0.9999, 600)
    fig, ax = plt.subplots(figsize=(4.2, 3.4), layout="constrained")
    for noise, bound in bounds.curve_methods():
        scale = NOISES[noise](sigma).scale
        style = _style(bound)
        style["label"] += f" (scale {scale:.3g})"
        ax.plot(pa, bounds.radius(bound, noise, scale, pa), **style)
    ax.set_xlabel("p̲A (lower bound of the top class probability)")
    ax.set_ylabel(RADIUS_LABEL)
    ax.set_title(f"Certified radius against p̲A, σ = {sigma:g}")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")  # where every radius is small: no curve goes there
    return save(fig, stem)


# --- certified accuracy curves ------------------------------------------------------------


def _trainings(runs: Sequence[CertifiedRun]) -> list[str]:
    present = {r.training for r in runs}
    return [t for t in TRAININGS if t in present] + sorted(present - set(TRAININGS))


def _sigmas(runs: Sequence[CertifiedRun]) -> list:
    return sorted({r.sigma for r in runs}, key=lambda s: (s is None, s or 0.0))


def _columns(panels: int, group: int) -> int:
    """Panels per row: whole groups of `group` panels (those that belong together) where they
    fit side by side, at most MAX_COLUMNS."""
    if group <= MAX_COLUMNS:
        return min(panels, group * (MAX_COLUMNS // group))
    return min(panels, MAX_COLUMNS)


def _panels(count: int, columns: int, title: str, xlabel: str, handles: list, legend_columns: int):
    """A figure of `count` panels, `columns` to a row, as wide as the text, and its one legend
    of `handles`: in the empty slots of the last row where it fits there, else below the
    panels, `legend_columns` entries to a row. The panels with none below them carry the x
    tick labels and `xlabel`. Returns (fig, axes)."""
    rows = math.ceil(count / columns)
    if columns >= 4:  # a bound's label fits a quarter of the text width at 7 pt (the rc
        plt.rcParams["axes.titlesize"] = MIN_FONT  # context of `_paper` restores it)
    width = TEXT_WIDTH if columns > 1 else TEXT_WIDTH / 2
    panel = min(max(0.72 * width / columns, 1.45), 2.4)  # a panel's height
    spare = rows * columns - count
    inside = _legend_fits(handles, spare * width / columns * 72, panel * 72)
    below = 0 if inside or not handles else math.ceil(len(handles) / legend_columns)
    height = rows * panel + 0.35 + 0.16 * below + (0.2 if title else 0.0)
    fig, cells = plt.subplots(rows, columns, figsize=(width, height), squeeze=False,
                             sharex=True, sharey=True, layout="constrained")  # fmt: skip
    axes = list(cells.flat)
    for ax in axes[count:]:
        ax.remove()
    axes = axes[:count]
    for i, ax in enumerate(axes):
        if i + columns >= count:  # nothing below it
            ax.tick_params(labelbottom=True)
            ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    if inside:
        slot = fig.add_subplot(cells[0, 0].get_gridspec()[rows - 1, columns - spare :])
        slot.axis("off")
        slot.legend(handles=handles, loc="center", ncols=inside)
    elif handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=legend_columns)
    return fig, axes


def _legend_fits(handles: list, width: float, height: float) -> int:
    """How many columns a legend of `handles` takes in an empty area of `width` × `height`
    points (0: it does not fit), from its longest label at 7 pt."""
    if not handles:
        return 0
    entry = 0.62 * MIN_FONT * max(len(h.get_label()) for h in handles) + 30
    columns = min(int(width // entry), len(handles))
    if columns < 1:
        return 0
    rows = math.ceil(len(handles) / columns)
    return math.ceil(len(handles) / rows) if rows * 1.6 * MIN_FONT <= 0.8 * height else 0


def _corner(ax, text: str) -> None:
    """A panel's second title in its upper right corner, where no accuracy curve goes (they
    fall from their clean accuracy at r = 0 to 0 at the axis's end)."""
    ax.text(0.97, 0.95, text, ha="right", va="top", transform=ax.transAxes, fontsize=MIN_FONT)


def _accuracy_axes(fig, axes, radius_axis: np.ndarray) -> None:
    for ax in axes:
        ax.set_ylim(0, 1)
        ax.set_xlim(0, float(radius_axis[-1]))
    fig.supylabel(ACCURACY_LABEL)


def _sigma_label(sigma) -> str:
    return f"σ = {sigma:g}" if sigma is not None else "σ unknown"


def _bound_handles(shown) -> list:
    return [Line2D([], [], **_style(b)) for b in bounds.BOUNDS if b in shown]


BOUND_LEGEND_COLUMNS = 3  # bound labels are long: three side by side fill the text width


@_paper
def accuracy_per_sigma(
    stem: Path, runs: Sequence[CertifiedRun], radius_axis: np.ndarray, title: str
) -> list[Path]:
    """One panel per method × training type that the runs have (a method's trainings side by
    side), one curve per σ."""
    trainings, sigmas = _trainings(runs), _sigmas(runs)
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(sigmas), 1)))
    present = {(r.training, r.noise, b) for r in runs for b in r.bounds}
    panels = [
        (noise, bound, training)
        for noise, bound in bounds.panel_methods()
        for training in trainings
        if (training, noise, bound) in present
    ]
    handles = [Line2D([], [], color=colors[i], label=_sigma_label(s)) for i, s in enumerate(sigmas)]
    legend_columns = min(len(handles), 8)
    fig, axes = _panels(
        len(panels), _columns(len(panels), len(trainings)),
        f"{title}: certified accuracy for each σ", RADIUS_LABEL, handles, legend_columns,
    )  # fmt: skip
    for ax, (noise, bound, training) in zip(axes, panels, strict=True):
        ax.set_title(bound_label(bound))
        _corner(ax, training_label(training))
        for run in runs:
            if run.training == training and run.noise == noise and bound in run.bounds:
                ax.plot(
                    radius_axis,
                    run.accuracy(bound, radius_axis),
                    color=colors[sigmas.index(run.sigma)],
                )
    _accuracy_axes(fig, axes, radius_axis)
    return save(fig, stem)


@_paper
def bound_comparison_per_sigma(
    stem: Path, runs: Sequence[CertifiedRun], radius_axis: np.ndarray, title: str
) -> list[Path]:
    """Figs. 7-8: at each σ the Laplace model's bounds beside the other noises' models, one
    panel per training type × σ that the runs have."""
    trainings, sigmas = _trainings(runs), _sigmas(runs)
    present = {(r.training, r.sigma) for r in runs}
    panels = [(t, s) for t in trainings for s in sigmas if (t, s) in present]
    handles = _bound_handles({b for r in runs for b in r.bounds})
    fig, axes = _panels(
        len(panels), _columns(len(panels), len(sigmas)), f"{title}: the bounds at each σ",
        RADIUS_LABEL, handles, BOUND_LEGEND_COLUMNS,
    )  # fmt: skip
    for ax, (training, sigma) in zip(axes, panels, strict=True):
        ax.set_title(f"σ = {sigma:g}" if sigma is not None else "σ unknown")
        _corner(ax, training_label(training))
        for run in runs:
            if run.training == training and run.sigma == sigma:
                for bound in run.bounds:
                    ax.plot(radius_axis, run.accuracy(bound, radius_axis), **_style(bound))
    _accuracy_axes(fig, axes, radius_axis)
    return save(fig, stem)


@_paper
def envelope(
    stem: Path, runs: Sequence[CertifiedRun], radius_axis: np.ndarray, title: str
) -> list[Path]:
    """Per training type, the best curve over σ of each bound."""
    trainings = _trainings(runs)
    handles = _bound_handles({b for r in runs for b in r.bounds})
    fig, axes = _panels(
        len(trainings), _columns(len(trainings), 1), f"{title}: envelope over σ",
        RADIUS_LABEL, handles, BOUND_LEGEND_COLUMNS,
    )  # fmt: skip
    for env in envelopes(runs, radius_axis):
        axes[trainings.index(env.training)].plot(radius_axis, env.accuracy, **_style(env.bound))
    for ax, training in zip(axes, trainings, strict=True):
        ax.set_title(training_label(training))
    _accuracy_axes(fig, axes, radius_axis)
    return save(fig, stem)


SIGMA_MARKERS = "osD^vP*Xph"  # one marker shape per σ of the cost figure, in σ order


@_paper
def cost(stem: Path, runs: Sequence[CertifiedRun], radius: float, title: str) -> list[Path]:
    """Certified accuracy at `radius` against forward passes per point, per training type: one
    marker per model and bound, its colour the bound's, its shape the model's σ. What each
    method buys for its cost."""
    trainings, sigmas = _trainings(runs), _sigmas(runs)
    points = []  # (training, passes, accuracy, bound, sigma)
    for run in runs:
        passes = float(np.mean(run.passes))
        if np.isfinite(passes):
            points += [
                (run.training, passes, float(run.accuracy(bound, [radius])[0]), bound, run.sigma)
                for bound in run.bounds
            ]

    def marker(sigma) -> str:
        return SIGMA_MARKERS[sigmas.index(sigma) % len(SIGMA_MARKERS)]

    handles = [
        Line2D([], [], color=entry.color, marker="o", ls="none", label=bound_label(b))
        for b, entry in bounds.BOUNDS.items()
        if any(p[3] == b for p in points)
    ]
    shapes = [
        Line2D([], [], color="gray", marker=marker(s), ls="none", label=_sigma_label(s))
        for s in sigmas
        if any(p[4] == s for p in points)
    ]
    rows = max(math.ceil((len(handles) + len(shapes)) / BOUND_LEGEND_COLUMNS), 1)
    handles += [Line2D([], [], ls="none", label=" ")] * (-len(handles) % rows)  # σ: a column
    handles += shapes
    fig, axes = _panels(
        len(trainings), _columns(len(trainings), 1),
        f"{title}: certified accuracy at r = {radius:g} against cost",
        "forward passes per point", handles, BOUND_LEGEND_COLUMNS,
    )  # fmt: skip
    for ax, training in zip(axes, trainings, strict=True):
        mine = [p for p in points if p[0] == training]
        for _, passes, accuracy, bound, sigma in mine:
            ax.scatter(passes, accuracy, color=bounds.BOUNDS[bound].color,
                       marker=marker(sigma), s=16, zorder=3, alpha=0.85)  # fmt: skip
        ax.set_title(training_label(training))
        if not mine:
            ax.text(0.5, 0.5, "no cost recorded", ha="center", va="center",
                    transform=ax.transAxes, color="gray")  # fmt: skip
    low, high = min((p[1] for p in points), default=1.0), max((p[1] for p in points), default=1.0)
    decades = math.log10(high * 1.5) - math.log10(low / 1.5)  # room for the markers at each end
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlim(low / 1.5, high * 1.5)
        # plain numbers (a power of ten's exponent would be printed under 7 pt), enough of them
        # to read a narrow range by
        subs = (1.0, 2.0, 5.0) if decades > 1.2 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0,) if decades > 3 else subs))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    fig.supylabel(f"{ACCURACY_LABEL} at r = {radius:g}")
    return save(fig, stem)
