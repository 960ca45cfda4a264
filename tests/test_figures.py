"""Figures: the bound-comparison region is the paper's Remark 2, and every figure is drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.image
import pytest
from conftest import write_hand_made

from l1cert import figures
from l1cert.analysis import radius_grid
from l1cert.runs import read_runs


def _check_png_and_pdf(stem: Path, min_width: int, min_height: int) -> None:
    image = matplotlib.image.imread(f"{stem}.png")
    height, width = image.shape[:2]
    assert width >= min_width and height >= min_height
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas
    pdf = Path(f"{stem}.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-64:] and len(pdf) > 5000


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


@pytest.mark.parametrize("draw", ["accuracy_per_sigma", "bound_comparison_per_sigma", "envelope"])
def test_dataset_figures(tmp_path, runs, draw):
    grid = radius_grid(runs)
    paths = getattr(figures, draw)(tmp_path / draw, runs, grid, "digits (n = 1000)")
    assert paths == [tmp_path / f"{draw}.png", tmp_path / f"{draw}.pdf"]
    _check_png_and_pdf(tmp_path / draw, 300, 400)  # two rows or a wide panel per training type


def test_per_sigma_figure_has_a_panel_per_training_and_method(tmp_path, runs):
    figures.accuracy_per_sigma(tmp_path / "one", runs[:1], radius_grid(runs), "t")
    figures.accuracy_per_sigma(tmp_path / "two", runs, radius_grid(runs), "t")
    one = matplotlib.image.imread(tmp_path / "one.png")
    two = matplotlib.image.imread(tmp_path / "two.png")
    assert two.shape[0] > 1.6 * one.shape[0]  # type1 and type2 rows
    assert one.shape[1] > 3 * one.shape[0]  # four method columns side by side
