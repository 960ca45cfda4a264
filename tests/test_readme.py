"""The README quotes the default experiment as a run of the current code made it: its numbers
are written from the run's results by `benchmarks/readme_numbers.py`, which records the code
digest of that run, and the script writes the report's own numbers."""

from __future__ import annotations

import csv
import importlib.util
import re
import shutil

from conftest import ROOT, write_grid

from l1cert.config import ReportConfig
from l1cert.provenance import code_digest
from l1cert.report import build_report


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_numbers", ROOT / "benchmarks" / "readme_numbers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_s_numbers_come_from_a_run_of_the_current_code():
    text = (ROOT / "README.md").read_text()
    blocks = [m.group(0) for m in _script().BLOCK.finditer(text)]
    assert len(blocks) == 2  # the run's settings (the figure's caption) and its envelope
    current = code_digest("certify")["sha256"][:16]
    for block in blocks:
        made = re.search(r"made by code (\w+)", block)
        assert made and made.group(1) == current, (
            "README.md quotes a run of other code: run the default experiment, then "
            f"`python benchmarks/readme_numbers.py` ({block.splitlines()[0]})"
        )


def test_the_script_writes_the_report_s_numbers(tmp_path):
    results = tmp_path / "results"
    files = write_grid(tmp_path / "certify", ("laplace", "dssn"), ("type1", "type2"), (0.25, 0.5))
    build_report(files, results, ReportConfig(radii="0,0.25,0.5"))
    for path in files:  # the merged files where the pipeline leaves them
        target = results / "certify" / path.parent.name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.with_suffix(".json"), target)
    readme = (
        "<!-- default-run: settings -->\nold\n<!-- end: settings -->\ntext\n"
        "<!-- default-run: envelope -->\nold\n<!-- end: envelope -->\n"
    )
    written = _script().render(readme, results)
    assert "old" not in written and "\ntext\n" in written
    assert "*The default run (8 models; fixed sampling, n ≤ 1 000 draws per point" in written
    assert "σ ∈ {0.25, 0.5}" in written and "on the 6 test digits" in written
    rows = [line.split(" | ") for line in written.splitlines() if line.startswith("| Type")]
    with open(results / "tables" / "envelope.csv") as f:
        envelope = list(csv.DictReader(f))
    assert len(rows) == len({(r["training"], r["bound"]) for r in envelope}) == 2 * 4
    first = [r for r in envelope if (r["training"], r["bound"]) == ("type1", "teng")]
    assert rows[0][:2] == ["| Type 1", "Laplace, Thm 2"]
    assert rows[0][2:5] == [f"{100 * float(r['certified_accuracy']):.1f}" for r in first]
