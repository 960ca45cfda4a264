"""Figures: the bound-comparison region is the paper's Remark 2, every figure is drawn, and every
figure is one a paper can take as it is: at most a text width wide, no text under 7 pt, a panel
for what the runs hold and nothing else, one legend off the curves, display names."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import matplotlib
import matplotlib.image
import pytest
from conftest import write_grid, write_hand_made
from matplotlib.text import Text

from l1cert import figures
from l1cert.analysis import radius_axis
from l1cert.runs import read_runs

TEXT_WIDTH_PT = 520  # the widest a figure may be: a paper's text width
MIN_FONT_PT = 7.0
IDS = "type1 type2 teng teng_multiclass lecuyer cohen uniform_box ssn ssn_box dssn".split()
RAW_IDS = re.compile(r"\b(" + "|".join(IDS) + r")\b")


def _check_png_and_pdf(stem: Path, min_width: int, min_height: int) -> None:
    image = matplotlib.image.imread(f"{stem}.png")
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    pdf = Path(f"{stem}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:] and len(pdf) > 5000


def pdf_page(path: Path) -> tuple[float, float, list[float]]:
    """(width, height) of a PDF's page in points (its MediaBox) and the size of every font
    its content streams set (`/F1 7 Tf`), mathtext's smaller exponents included."""
    data = path.read_bytes()
    box = re.search(rb"/MediaBox\s*\[\s*([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*\]", data)
    x0, y0, x1, y1 = map(float, box.groups())
    sizes = []
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        try:
            text = zlib.decompress(stream.group(1))
        except zlib.error:
            text = stream.group(1)
        sizes += [float(s) for s in re.findall(rb"/F\d+\s+([\d.]+)\s+Tf", text)]
    return x1 - x0, y1 - y0, sizes


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures `figures.save` writes, kept to look into after they are saved."""
    kept, save = [], figures.save

    def keep(fig, stem):
        kept.append(fig)
        return save(fig, stem)

    monkeypatch.setattr(figures, "save", keep)
    return kept


def _texts(fig) -> list[Text]:
    """Every text the saved figure shows (tick labels as drawn)."""
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _panels(fig) -> list:
    """The data panels: axes that show their frame (a legend's slot shows none)."""
    return [ax for ax in fig.axes if ax.axison]


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in _panels(fig)]


def test_paper_figures(tmp_path):
    assert figures.bound_comparison(tmp_path / "fig4", resolution=100) == [
        tmp_path / "fig4.png",
        tmp_path / "fig4.pdf",
    ]
    _check_png_and_pdf(tmp_path / "fig4", 400, 400)
    figures.radius_vs_pa(tmp_path / "fig6", sigma=0.5)
    _check_png_and_pdf(tmp_path / "fig6", 400, 300)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, hand_made):
    """The hand-made Laplace file as Type 1 and as Type 2."""
    type2 = write_hand_made(tmp_path_factory.mktemp("figures"), training="type2")
    return read_runs([hand_made, type2], quiet=True)


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory):
    """Laplace, Gaussian, uniform and DSSN models, three training types, four σ: more panels
    than a row holds."""
    folder = tmp_path_factory.mktemp("grid")
    trainings, sigmas = ("type1", "type2", "consistency"), (0.12, 0.25, 0.5, 1.0)
    files = write_grid(folder, ("laplace", "gaussian", "uniform", "dssn"), trainings, sigmas)
    return read_runs(files, quiet=True)


def _draw(name: str, stem: Path, runs):
    if name == "bound_comparison":
        return figures.bound_comparison(stem, resolution=100)
    if name == "radius_vs_pa":
        return figures.radius_vs_pa(stem, sigma=0.5)
    if name == "cost":
        return figures.cost(stem, runs, 0.25, "digits")
    return getattr(figures, name)(stem, runs, radius_axis(runs), "digits")


ALL = ["bound_comparison", "radius_vs_pa", "accuracy_per_sigma", "bound_comparison_per_sigma",
       "envelope", "cost"]  # fmt: skip


@pytest.mark.parametrize("name", ALL)
def test_every_figure_fits_a_text_width_with_no_text_under_7pt(tmp_path, grid_runs, drawn, name):
    _draw(name, tmp_path / name, grid_runs)
    width, height, sizes = pdf_page(tmp_path / f"{name}.pdf")
    assert 200 < width <= TEXT_WIDTH_PT and height > 150
    assert sizes and min(sizes) >= MIN_FONT_PT, sorted(set(sizes))
    (fig,) = drawn
    assert fig.get_size_inches()[0] * 72 == pytest.approx(width)  # the PDF is the figure
    texts = _texts(fig)
    assert texts and all(t.get_fontsize() >= MIN_FONT_PT for t in texts)
    assert not any("$" in t.get_text() for t in texts)  # no mathtext: its exponents are smaller
    shown = " ".join(t.get_text() for t in texts)
    assert not RAW_IDS.search(shown), shown  # display names, not ids
    for ax in _panels(fig):  # the legend is the figure's (below, or in an empty slot) ...
        assert ax.get_legend() is None or name in ("bound_comparison", "radius_vs_pa")
    if name not in ("bound_comparison", "radius_vs_pa"):  # ... and there is one
        in_a_slot = [ax for ax in fig.axes if not ax.axison and ax.get_legend()]
        assert len(fig.legends) + len(in_a_slot) == 1


@pytest.mark.parametrize("name", ["accuracy_per_sigma", "bound_comparison_per_sigma", "envelope",
                                  "cost"])  # fmt: skip
def test_dataset_figures(tmp_path, runs, name):
    paths = _draw(name, tmp_path / name, runs)
    assert paths == [tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"]
    _check_png_and_pdf(tmp_path / name, 600, 400)


def test_more_panels_wrap_to_more_rows_at_the_same_width(tmp_path, runs, grid_runs, drawn):
    figures.accuracy_per_sigma(tmp_path / "few", runs, radius_axis(runs), "t")
    figures.accuracy_per_sigma(tmp_path / "many", grid_runs, radius_axis(grid_runs), "t")
    few, many = (pdf_page(tmp_path / f"{stem}.pdf") for stem in ("few", "many"))
    assert few[0] == many[0] <= TEXT_WIDTH_PT and many[1] > 2 * few[1]
    # 5 methods × 3 training types, a method's three side by side
    assert len(_panels(drawn[1])) == 15
    assert len({ax.get_position().x0 for ax in _panels(drawn[1])}) == 3


def test_a_noise_the_runs_do_not_have_gets_no_panel(tmp_path, runs, drawn):
    """The hand-made files are Laplace models: no Gaussian, uniform or splitting panel."""
    figures.accuracy_per_sigma(tmp_path / "laplace", runs, radius_axis(runs), "t")
    (fig,) = drawn
    assert _titles(fig) == ["Laplace, Thm 2"] * 2 + ["Laplace, Lecuyer et al. (DP)"] * 2
    shown = [t.get_text() for t in _texts(fig)]
    assert "Type 1" in shown and "Type 2" in shown
    assert not any("no certify file" in t or "Splitting" in t for t in shown)

    figures.bound_comparison_per_sigma(tmp_path / "one", runs[:1], radius_axis(runs), "t")
    assert _titles(drawn[1]) == ["σ = 0.5"]  # one training type, one σ: one panel
