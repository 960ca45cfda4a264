"""The README quotes runs of the current code: every measured number sits in a block that a
script of benchmarks/ wrote from its own measurement (`benchmarks/readme_blocks.py`), recording
the digest of the code that decides the models and their certificates."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys

import pytest
from conftest import ROOT, write_grid

from l1cert.config import ReportConfig
from l1cert.report import build_report

BENCHMARKS = ROOT / "benchmarks"


def _script(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import readme_blocks beside them
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def test_every_measured_block_of_the_readme_comes_from_the_current_code():
    blocks = _script("readme_blocks")
    text = (ROOT / "README.md").read_text()
    found = list(blocks.BLOCK.finditer(text))
    names = {m["name"] for m in found}
    assert names == {"default-run-time", "default-run-settings", "default-run-envelope",
                     "default-run-metrics", "sequential", "certify-cost", "certify-throughput",
                     "training-objectives", "box-envelope"}  # fmt: skip
    opened = [line for line in text.splitlines() if line.startswith("<!-- measured:")]
    assert len(opened) == len(found)  # none left unclosed
    current = blocks.current_code()
    for match in found:
        made = blocks.MADE_BY.match(match["body"])
        assert made, f"block {match['name']} was never written: run its script with --readme"
        assert made["digest"] == current, (
            f"README.md's block {match['name']} quotes a run of other code: rerun "
            f"`{made['command']}`"
        )
        script = (ROOT / made["command"].split()[1]).read_text()
        assert f'"{match["name"]}' in script, f"{made['command']} does not write {match['name']}"


def test_blocks_are_replaced_by_name_and_a_missing_one_is_refused():
    blocks = _script("readme_blocks")
    readme = ("a\n<!-- measured: one -->\nold\n<!-- end: one -->\nb\n"
              "<!-- measured: two -->\nkept\n<!-- end: two -->\n")  # fmt: skip
    written = blocks.render(readme, {"one": "new 1.0"}, "python benchmarks/x.py", "abc")
    assert written == ("a\n<!-- measured: one -->\n<!-- made by code abc: python benchmarks/x.py"
                       " -->\nnew 1.0\n<!-- end: one -->\nb\n<!-- measured: two -->\nkept\n"
                       "<!-- end: two -->\n")  # fmt: skip
    assert blocks.render(written, {"one": "new 1.0"}, "python benchmarks/x.py", "abc") == written
    with pytest.raises(SystemExit, match="no block three"):
        blocks.render(readme, {"three": "x"}, "python benchmarks/x.py", "abc")


def test_the_default_run_s_blocks_are_the_report_s_numbers(tmp_path):
    results = tmp_path / "results"
    files = write_grid(tmp_path / "certify", ("laplace", "dssn"), ("type1", "type2"), (0.25, 0.5))
    build_report(files, results, ReportConfig(radii="0,0.25,0.5"))
    for path in files:  # the merged files where the pipeline leaves them
        target = results / "certify" / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.with_suffix(".json"), target)
    script = _script("readme_numbers")
    written = script.blocks(results)
    settings = written["default-run-settings"]
    assert "*The default run (8 models; fixed sampling, n ≤ 1 000 draws per point" in settings
    assert "σ ∈ {0.25, 0.5}" in settings and "on the 6 test digits" in settings
    rows = [line.split(" | ") for line in written["default-run-envelope"].splitlines()
            if line.startswith("| Type")]  # fmt: skip
    with open(results / "tables" / "envelope.csv") as f:
        envelope = list(csv.DictReader(f))
    assert len(rows) == len({(r["training"], r["bound"]) for r in envelope}) == 2 * 4
    first = [r for r in envelope if (r["training"], r["bound"]) == ("type1", "teng")]
    assert rows[0][:2] == ["| Type 1", "Laplace, Thm 2"]
    assert rows[0][2:5] == [f"{100 * float(r['certified_accuracy']):.1f}" for r in first]
    metrics = written["default-run-metrics"].splitlines()
    teng = next(line for line in metrics if line.startswith("results/summary/teng.json"))
    headline = (results / "summary" / "teng.json").read_text()
    assert teng.split()[1] in headline and "the table is 9 rows by" in metrics[0]
    every = script.metrics_excerpt(results, rows=9).splitlines()  # no split model: a row of -
    assert next(line for line in every if "/ssn.json" in line).split()[1:] == ["-"] * 6


def test_the_sequential_block_sums_and_ranges_the_models():
    records = [
        dict(noise=noise, sigma=sigma, points=180, fixed_draws=fixed, seq_draws=seq,
             fixed_s=fixed / 1e6, seq_s=seq / 5e5, median=median, diff=diff, top=0.1, edge=0.2)
        for noise, sigma, fixed, seq, median, diff in [
            ("laplace", "0.5", 18_000_000, 9_000_000, 50_000, 0.0),
            ("uniform", "0.5", 18_000_000, 1_000_000, 1_000, 0.56),
            ("uniform", "1", 18_000_000, 2_000_000, 3_000, 0.0),
        ]
    ]  # fmt: skip
    records[2].update(top=0.3, edge=0.05)
    text = _script("certify_sequential").summary(records, 100_000, 2, 2)
    assert "| all 3 | 54 M / 12 M: 4.5× fewer | 54 s / 24 s: 2.2× shorter |" in text
    assert "| Laplace | 2.0× fewer | 1.0× |" in text
    assert "| Uniform | 12.0× fewer | 6.0× |" in text
    assert "| σ = 0.5 / 1 | 3.6× / 9.0× fewer | 1.8× / 4.5× |" in text
    assert "at most 0.56 points" in text and "Uniform 1 000–3 000" in text
    assert "Laplace 10 % / 20 %; Uniform 10–30 % / 5–20 %." in text


def test_the_cost_block_gives_dssn_s_ratios():
    from types import SimpleNamespace

    script = _script("certify_cost")
    cost = script.Cost  # (passes, job s, accuracy %, loop s) per point
    verdicts = [
        (0.5, {"dssn exact": cost(27, 0.0001, [96.0, 80.0], 0.00005),
               "uniform fixed": cost(100_100, 0.05, [90.0, 70.0], 0.04),
               "uniform sequential": cost(2_700, 0.002, [90.0, 70.0], 0.001)}),
        (1.0, {"dssn exact": cost(55, 0.0002, [90.0, 60.0], 0.0001),
               "uniform fixed": cost(100_100, 1.2, [97.0, 50.0], 0.05),
               "uniform sequential": cost(11_000, 0.006, [97.0, 50.0], 0.004)}),
    ]  # fmt: skip
    args = SimpleNamespace(skip=2, repeat=1, training="type1", n=100_000, threads=2)
    text = script.summary(verdicts, [0, 0.5], args)
    assert "| 0.5 | `dssn` exact (L = 27) | 27 | 0.1 | 0.05 | 96.0 / 80.0 |" in text
    assert "| 1 | `uniform` fixed | 100 100 | 1 200 | 50 | 97.0 / 50.0 |" in text
    assert "DSSN takes 1 820–3 707× fewer forward passes than fixed sampling" in text
    assert "and 100–200× fewer than sequential sampling" in text
    assert "its certify loop is 20.0× / 40.0× shorter than sequential's at σ = 0.5 / 1" in text
    assert "(whole jobs, loading included: 20.0× / 30.0×)" in text
    assert "-7.0 to +10.0 points" in text


def test_every_benchmark_script_imports():
    """A script the README quotes must still run against the library as it is now (a renamed
    function once broke two of them silently)."""
    import subprocess

    names = sorted(p.stem for p in BENCHMARKS.glob("*.py"))
    code = "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]"
    found = subprocess.run([sys.executable, "-c", code, *names], cwd=BENCHMARKS,
                           capture_output=True, text=True)  # fmt: skip
    assert found.returncode == 0, found.stderr[-2000:]
