"""One door per kind of extension: the registries that every layer reads, the parameter
dataclasses that generate options and schema, and the one function per command that both
engines build their command lines from. A test adds a toy extension in the test alone and runs
it through certify, resume, merge, re-derivation and the report with no other change:

- a sampling mode: an entry of `sampling.MODES` and a name in its noise's `samplings`;
- an exact noise: a `Noise` class whose only mode counts exactly, and its bound in
  `bounds.BOUNDS` (DSSN's hooks: `copies`, `exact_copies_`, `exact_certificate`, and the
  bound's radius from a row's counts);
- a bound added to a noise: results written before it still load and report.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import FAST, ROOT, cut_short, make_project, params, read_table, run, without_time

from l1cert import (
    bounds,
    captions,
    dvc_stages,
    figures,
    noise,
    pipeline,
    sampling,
    schema,
    sequential,
)
from l1cert import certify_format as fmt
from l1cert.certify import certify_to_tsv
from l1cert.cli import main
from l1cert.config import ReportConfig
from l1cert.merge import merge_shards
from l1cert.noise import NOISES
from l1cert.report import build_report
from l1cert.runs import read_run
from l1cert.splitting import ExactCertificate
from l1cert.utils import L1CertError

torch.set_num_threads(1)
BASE_SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"


# --- the registries -----------------------------------------------------------------------


def test_every_bound_of_every_noise_is_registered_with_its_presentation():
    for cls in NOISES.values():
        for bound in cls.bounds:
            entry = bounds.BOUNDS[bound]
            assert entry.label and entry.caption and entry.color and entry.style
            assert bounds.owner(bound) == cls.name
    owned = [b for cls in NOISES.values() for b in cls.bounds]
    assert sorted(owned) == sorted(bounds.BOUNDS)  # no bound without a noise


def test_the_schema_enums_come_from_the_registries():
    found = schema.params_schema(BASE_SCHEMA)["properties"]
    assert found["sweep"]["properties"]["noises"]["items"]["enum"] == list(NOISES)
    # a released checkpoint has no template: it is certified by Monte Carlo
    sampled = [n for n, cls in NOISES.items() if "exact" not in cls.samplings]
    assert found["models"]["items"]["properties"]["noise"]["enum"] == sampled


def test_figures_and_captions_read_the_bound_registry(monkeypatch, tmp_path):
    """A new bound's label appears in Fig. 6 and the captions without editing either."""
    entry = bounds.BOUNDS["uniform"]
    patched = {**bounds.BOUNDS, "uniform": dataclasses.replace(entry, label="NEW LABEL")}
    monkeypatch.setattr(bounds, "BOUNDS", patched)
    monkeypatch.setattr(captions, "BOUNDS", patched)
    assert figures._style("uniform")["label"] == "NEW LABEL"
    text = captions.captions([], [0.0], 0.5)["radius-vs-pa"]
    assert "NEW LABEL" in text


def test_dvc_plots_draw_every_model_offline(tmp_path):
    """`dvc plots show` on a report's long plot data: every model of every bound is a curve
    (one series per model in the rendered data), and its page loads no script from a CDN."""
    import csv

    from conftest import write_certify_file

    project = make_project(tmp_path / "project")
    files = [
        write_certify_file(
            project / "c" / f"{noise}-type1-s{s}.tsv", noise, s,
            [{"idx": 0, "label": 1, "count": 950, "count_b": 30, "top_class": 1}],
        )
        for noise in ("laplace", "gaussian")
        for s in (0.25, 0.5)
    ]  # fmt: skip
    out = project / "results"
    assert (
        CliRunner().invoke(main, ["report", *map(str, files), "--out-dir", str(out)]).exit_code == 0
    )
    plot = "results/plots/certified-accuracy.csv"
    with open(project / plot) as f:
        models = {row["model"] for row in csv.DictReader(f)}
    assert len(models) == 4
    props = ["-x", "radius", "-y", "certified_accuracy", "--template", dvc_stages.PLOT_TEMPLATE]
    shown = run(["dvc", "plots", "show", "--json", plot, *props], project).stdout
    assert all(model in shown for model in models)
    run(["dvc", "plots", "show", plot, *props, "-o", "page"], project)
    page = (project / "page" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vega-embed" in page and "laplace-type1-s0.25" in page


# --- one home per parameter set -----------------------------------------------------------


# --- one command line per step, for both engines -------------------------------------------


def test_the_report_s_experiment_files_are_named_as_the_stages_write_them(tmp_path):
    """DVC's report reads `--experiment params.yaml`: its file names must be the ones the
    certify and merge stages write, σ as the params spell it (2, not 2.0)."""
    config = {**params(), "sweep": {"noises": ["laplace"], "trainings": ["type1"],
                                   "sigmas": [2, 0.5, 1.0]}}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    names = ["laplace-type1-s2.tsv", "laplace-type1-s0.5.tsv", "laplace-type1-s1.0.tsv"]
    root = tmp_path / "certify"
    with pytest.raises(L1CertError, match="laplace-type1-s2.tsv is missing .*l1cert dvc-yaml"):
        pipeline.merged_files(tmp_path / "p.yaml", root)
    (root / "digits").mkdir(parents=True)
    for name in names:
        (root / "digits" / name).touch()
    assert [p.name for p in pipeline.merged_files(tmp_path / "p.yaml", root)] == names


def test_the_rules_use_the_pipeline_builders():
    """No rule writes an `l1cert` command of its own: each runs the one l1cert.pipeline built."""
    for rule in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rule.read_text()
        assert '"l1cert ' not in text, rule.name
        assert text.count("shell:") == text.count('"{params.cmd} > {log} 2>&1"'), rule.name


SRC = Path(__file__).resolve().parents[1] / "src" / "l1cert"


RADII = "0,0.1,0.25,0.5"


EXACT = {k: v for k, v in FAST.items() if k not in ("n0", "n", "alpha", "seed")}


def test_no_module_but_sampling_compares_mode_names():
    """A mode is known by its entry's properties (`estimates`, `varies_n`, what it `takes`),
    never by its name, outside `l1cert.sampling`."""
    compare = re.compile(
        r"""(==|!=)\s*["'](fixed|sequential|exact)["']|["'](fixed|sequential|exact)["']\s*(==|!=)"""
        r"""|["'](fixed|sequential|exact)["']\s+(not\s+)?in\b"""
    )
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(SRC.glob("*.py"))
        if path.name != "sampling.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if compare.search(line)
    ]
    assert not found, found


def _through_every_stage(model: Path, tmp_path: Path, **options) -> tuple[Path, list]:
    """Certify whole, resume a run cut short, certify two shards and merge them, then report:
    the resumed and merged rows must be the whole run's; returns the merged file and the
    report's outputs."""
    whole = certify_to_tsv(model, tmp_path / "whole.tsv", **options)
    cut_short(whole, tmp_path / "resumed.tsv", rows=7)
    resumed = certify_to_tsv(model, tmp_path / "resumed.tsv", **options)
    assert without_time(read_table(resumed)) == without_time(read_table(whole))
    shards = [
        certify_to_tsv(model, tmp_path / f"s{k}.tsv", shard=(k, 2), **options) for k in (1, 2)
    ]
    merged = merge_shards(shards, tmp_path / "merged.tsv")
    key = lambda rows: sorted(rows, key=lambda r: int(r["idx"]))  # noqa: E731
    assert key(without_time(read_table(merged))) == key(without_time(read_table(whole)))
    written = build_report([merged], tmp_path / "report", ReportConfig(radii=RADII))
    return merged, written


# --- a sampling mode ------------------------------------------------------------------------


def _check_early(settings: dict) -> dict:
    """Sequential sampling's settings with a larger first look: a mode of its own."""
    return {**sampling.MODES["sequential"].check(settings),
            "looks": sequential.looks(settings["n"], 50)}  # fmt: skip


def _run_early(smooth, test_set, todo, settings):
    n0, n, alpha, batch, seed = (settings[k] for k in ("n0", "n", "alpha", "batch", "seed"))
    points = ((idx, test_set[idx][0]) for idx in todo)
    found = smooth.certify_sequential(points, n0, n, alpha, batch, settings["radii"], seed, 50)
    return ((idx, cert, 0.0) for idx, cert in found)


@pytest.fixture
def early_mode(monkeypatch):
    sequential_mode = sampling.MODES["sequential"]
    mode = dataclasses.replace(sequential_mode, name="early", check=_check_early, run=_run_early,
                               help="sequential from a first look of 50")  # fmt: skip
    monkeypatch.setitem(sampling.MODES, "early", mode)
    monkeypatch.setattr(noise.Laplace, "samplings", (*noise.Laplace.samplings, "early"))
    return mode


def test_a_sampling_mode_that_takes_radii_and_varies_n(checkpoint, tmp_path, early_mode):
    merged, written = _through_every_stage(
        checkpoint, tmp_path, sampling="early", radii=RADII, **FAST
    )
    result = fmt.read_sidecar(merged)["result"]
    assert result["sampling"] == "early" and result["looks"][0] == 50
    assert result["radii"] == [float(r) for r in RADII.split(",")]
    rows = read_table(merged)
    assert {int(r["n"]) for r in rows} <= set(result["looks"])  # n varies with the point
    assert len({int(r["n"]) for r in rows}) > 1
    caption = (tmp_path / "report" / "captions" / "certified-accuracy.rst").read_text()
    assert "early sampling" in caption and "its ACR is not comparable" in caption


# --- an exact noise -------------------------------------------------------------------------


def _mirror_radius(count_a, count_b, top, runner_up, result):
    """The toy bound: the scale where both copies agree, else 0."""
    return np.where(np.asarray(count_a) - np.asarray(count_b) >= 2, result["scale"], 0.0)


class Mirror(noise.Noise):
    """A toy exact noise with L = 2 copies of each point: x itself and 1 − x."""

    name = "mirror"
    bounds = ("mirror",)
    samplings = ("exact",)
    exact = True

    @property
    def scale(self) -> float:
        return self.sigma

    @property
    def copies(self) -> int:
        return 2

    def exact_copies_(self, out, xs, copies):
        flip = copies.view(-1, *([1] * (xs.dim() - 1))).to(xs.dtype)
        return out.copy_(xs + flip * (1 - 2 * xs))

    def exact_certificate(self, counts):
        counts = counts.cpu().numpy()
        rows = np.arange(len(counts))
        a = counts.argmax(axis=1)
        others = counts.copy()
        others[rows, a] = -1
        b = others.argmax(axis=1)
        radius = _mirror_radius(counts[rows, a], counts[rows, b], a, b, {"scale": self.scale})
        return ExactCertificate(a, counts[rows, a], b, counts[rows, b], radius)


@pytest.fixture
def mirror(monkeypatch):
    monkeypatch.setitem(noise.NOISES, "mirror", Mirror)
    entry = bounds.Bound("mirror", _mirror_radius, None, False, "Mirror (toy)", "tab:gray", "-",
                         "the toy mirror model", exact=True)  # fmt: skip
    monkeypatch.setitem(bounds.BOUNDS, "mirror", entry)


def test_an_exact_noise_other_than_dssn(checkpoint, tmp_path, mirror):
    merged, written = _through_every_stage(checkpoint, tmp_path, noise="mirror", **EXACT)
    result = fmt.read_sidecar(merged)["result"]
    assert result["sampling"] == "exact" and result["n"] == 2
    assert result["n0"] is None and result["alpha"] is None
    rows = read_table(merged)
    assert fmt.columns("mirror")[-1] == "runner_up"
    assert {r["n"] for r in rows} == {"2"} and {r["alpha"] for r in rows} == {"0"}
    agree = [r for r in rows if r["count"] == "2"]
    assert agree and all(float(r["radius_mirror"]) == 0.25 for r in agree)
    assert all(float(r["radius_mirror"]) == 0 for r in rows if r["count"] != "2")
    # the report re-derived every row (a row edited by hand is refused) and tabled the bound
    table = (tmp_path / "report" / "tables" / "certified-accuracy.csv").read_text()
    assert ",mirror," in table
    run = read_run(merged)
    assert list(run.bounds) == ["mirror"] and run.points == len(rows)


def test_an_edited_exact_row_is_refused(checkpoint, tmp_path, mirror):
    out = certify_to_tsv(checkpoint, tmp_path / "m.tsv", noise="mirror", **EXACT)
    lines = out.read_text().splitlines(keepends=True)
    header = lines[0].rstrip("\n").split("\t")
    cells = lines[1].rstrip("\n").split("\t")
    radius = header.index("radius_mirror")
    cells[radius] = "0.25" if float(cells[radius]) == 0 else "0"
    lines[1] = "\t".join(cells) + "\n"
    out.write_text("".join(lines))
    side = {k: v for k, v in fmt.read_sidecar(out).items() if k not in ("rows", "tsv_sha256")}
    fmt.write_sidecar(out, fmt.seal(out, side, len(lines) - 1))  # sealed: only its rows lie
    with pytest.raises(L1CertError, match="radius_mirror"):
        read_run(out, partial=True)


# --- a bound added to a noise ---------------------------------------------------------------


def test_results_written_before_a_bound_was_added_still_report(checkpoint, tmp_path, monkeypatch):
    old = certify_to_tsv(checkpoint, tmp_path / "old.tsv", **FAST)
    before = fmt.read_sidecar(old)["result"]["bounds"]
    half = lambda pa, scale: 0.5 * bounds.lecuyer(pa, scale)  # noqa: E731
    entry = dataclasses.replace(bounds.BOUNDS["lecuyer"], name="lecuyer_half", radius=half,
                                label="Laplace, half DP")  # fmt: skip
    monkeypatch.setitem(bounds.BOUNDS, "lecuyer_half", entry)
    monkeypatch.setattr(noise.Laplace, "bounds", (*noise.Laplace.bounds, "lecuyer_half"))

    run = read_run(old)  # its bounds are its sidecar's, not today's noise's
    assert list(run.bounds) == before
    build_report([old], tmp_path / "report", ReportConfig(radii=RADII))
    with open(tmp_path / "report" / "tables" / "certified-accuracy.csv") as f:
        tabled = {row["bound"] for row in csv.DictReader(f)}
    assert sorted(tabled) == sorted(before)

    new = certify_to_tsv(checkpoint, tmp_path / "new.tsv", **FAST)  # a new run has the bound
    assert "radius_lecuyer_half" in read_table(new)[0]
    assert list(read_run(new).bounds) == [*before, "lecuyer_half"]
