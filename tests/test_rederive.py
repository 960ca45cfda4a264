"""Rows read back are re-derived, not trusted (`l1cert.rederive`): resume, merge and the report
recompute every derived column from a row's counts and the run's settings, and refuse the first
row that disagrees in one line naming file, idx and column, however the file was sealed."""

from __future__ import annotations

import pytest
from conftest import FAST, cut_short, read_table, run_cli

from l1cert.certify import certify_to_tsv
from l1cert.resume import partial_path

TAMPERED = {
    "radius": {"radius": "9.5"},
    "radius_teng": {"radius_teng": "9.5"},
    "label": {"label": "7", "correct": "0"},
    "count-over-n": {"count": "999999"},
    "pa_lower-text": {"pa_lower": "abc"},
    "sigma": {"sigma": "0.3"},
    "correct": {"correct": "1", "predict": "-1"},
}


@pytest.mark.parametrize("edit", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_partial_row_is_refused_on_resume(checkpoint, tmp_path, edit):
    reference = certify_to_tsv(checkpoint, tmp_path / "reference.tsv", **FAST)
    rows, row = read_table(reference), 2
    out = tmp_path / "run.tsv"
    cut_short(reference, out, rows=4, edit={"row": row, **edit})
    before = partial_path(out).read_bytes()
    code, message = run_cli(
        "certify", "--model", checkpoint, "--n0", 20, "--n", 200, "--batch", 64, "--seed", 3,
        "--max", 30, "--out", out,
    )  # fmt: skip
    assert code == 2, message
    # the row named by its idx (re-derived), or by its line (the reader's own checks)
    where = (f"idx {rows[row - 1]['idx']}: ", f"run.tsv:{row + 1}: ")
    assert any(w in message for w in where) and message.startswith("l1cert: error:"), message
    assert any(f": {column} " in message for column in edit), message
    assert partial_path(out).read_bytes() == before and not out.exists()


def test_an_untouched_partial_resumes(checkpoint, tmp_path):
    reference = certify_to_tsv(checkpoint, tmp_path / "reference.tsv", **FAST)
    out = tmp_path / "run.tsv"
    cut_short(reference, out, rows=4)
    assert certify_to_tsv(checkpoint, out, **FAST) == out
    strip = [{k: v for k, v in r.items() if k != "time"} for r in read_table(out)]
    assert strip == [{k: v for k, v in r.items() if k != "time"} for r in read_table(reference)]
