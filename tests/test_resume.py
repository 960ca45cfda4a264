"""A certify run resumes where it stopped (`l1cert.resume`): a killed run ends with the rows of
one uninterrupted run, none recomputed; a partial file of other settings or other row code is
refused and left as it was; one writer at a time."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import (
    FAST,
    KINDS,
    assert_one_line_error,
    cut_short,
    read_table,
    run_cli,
    without_time,
)

from l1cert import provenance, sampling
from l1cert.certify import certify_to_tsv
from l1cert.resume import partial_path
from l1cert.utils import L1CertError


def test_resume_refuses_other_settings(checkpoint, tmp_path):
    out = tmp_path / "run.tsv"
    certify_to_tsv(checkpoint, out, **FAST)
    args = ["certify", "--model", checkpoint, "--n0", 20, "--n", 400, "--batch", 64, "--seed", 3]
    code, message = run_cli(*args, "--max", 30, "--out", out)
    assert_one_line_error(code, message, "other settings", "n: 200")


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["fixed", "sequential"])
def test_resume_after_sigkill(checkpoint, tmp_path, sampling):
    """Kill a real `l1cert certify` mid-run (sequential: mid-round for the points in flight),
    tear its last line, restart: the same table as one uninterrupted run."""
    out = tmp_path / "killed.tsv"
    partial = partial_path(out)
    radii = {"fixed": {}, "sequential": {"radii": [0, 0.1, 0.25]}}[sampling]
    args = [
        sys.executable, "-m", "l1cert.cli", "certify", "--model", str(checkpoint),
        "--n0", "50", "--n", "10000", "--batch", "1000", "--seed", "3", "--max", "30",
        "--threads", "1", "--sampling", sampling, "--out", str(out),
        *(["--radii", "0,0.1,0.25"] if radii else []),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 6:  # header + 5 rows
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(partial.read_text().splitlines()) - 1
    assert 5 <= done_before < 30 and not out.exists(), "the run must be killed mid-way"
    with open(partial, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write("28\t4\t")

    subprocess.run(args, env=env, check=True, stderr=subprocess.DEVNULL)
    resumed = read_table(out)
    assert [int(r["idx"]) for r in resumed] == list(range(30))  # none lost, none twice
    reference = certify_to_tsv(
        checkpoint, tmp_path / "reference.tsv", sampling=sampling,
        **{**FAST, "n0": 50, "n": 10000, "batch": 1000, "max": 30, **radii},
    )  # fmt: skip
    assert without_time(resumed) == without_time(read_table(reference))


def test_a_second_writer_stops_at_once_naming_the_first(checkpoint, tmp_path):
    from l1cert.transaction import exclusive_lock

    out = tmp_path / "run.tsv"
    with exclusive_lock(partial_path(out)):
        code, message = run_cli("certify", "--model", checkpoint, "--n", 10, "--out", out)
    assert_one_line_error(code, message, "is being written by pid", str(os.getpid()))
    assert not out.exists()


def test_resume_refuses_rows_made_by_other_code(checkpoint, tmp_path):
    out = tmp_path / "run.tsv"
    certify_to_tsv(checkpoint, out, **FAST)
    partial = partial_path(out)  # a run cut short under an older version of the code
    partial.write_text("".join(out.read_text().splitlines(keepends=True)[:4]))
    side = json.loads(out.with_suffix(".json").read_text())
    del side["rows"], side["tsv_sha256"], side["certify_seconds"]
    side["result"]["code"] = {"version": "0.0.9", "sha256": "0" * 64}
    partial.with_suffix(".json").write_text(json.dumps(side))
    out.unlink()
    out.with_suffix(".json").unlink()
    with pytest.raises(L1CertError, match="made by other l1cert code .* to start afresh"):
        certify_to_tsv(checkpoint, out, **FAST)
    assert len(partial.read_text().splitlines()) == 4  # left as it was


def test_resume_survives_edits_outside_the_row_code(checkpoint, tmp_path, monkeypatch):
    """The sidecar's code digest covers the modules that decide a row's numbers: a partial file
    made before an edit of merge's messages resumes, one made before an edit of a radius
    function is refused."""

    reference = certify_to_tsv(checkpoint, tmp_path / "reference.tsv", **FAST)
    package = tmp_path / "l1cert"
    shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)

    merge = package / "merge.py"
    merge.write_text(merge.read_text().replace("they are not one certification", "not one run"))
    cut_short(reference, tmp_path / "resumed.tsv", rows=3)
    resumed = certify_to_tsv(checkpoint, tmp_path / "resumed.tsv", **FAST)
    assert without_time(read_table(resumed)) == without_time(read_table(reference))

    radii = package / "bounds.py"
    radii.write_text(radii.read_text().replace("2.0 * (1.0 - p)", "(1.0 - p) * 2.0"))
    cut_short(reference, tmp_path / "refused.tsv", rows=3)
    with pytest.raises(L1CertError, match="made by other l1cert code"):
        certify_to_tsv(checkpoint, tmp_path / "refused.tsv", **FAST)


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", KINDS)
def test_a_partial_file_resumes_under_another_batch_size(request, tmp_path, monkeypatch, kind):
    """A run with batch 1000 stopped after 4 rows, resumed with batch 37: the table of one
    uninterrupted run."""
    model_fixture, settings = KINDS[kind]
    model = request.getfixturevalue(model_fixture)
    options = dict(settings, max=30, progress=False)
    name = {"dssn": "exact"}.get(kind, kind)
    mode = sampling.MODES[name]

    def stopped_after_4(smooth, test_set, todo, run_settings):
        for row, certified in enumerate(mode.run(smooth, test_set, todo, run_settings)):
            if row == 4:
                raise _Interrupted
            yield certified

    out = tmp_path / "resumed.tsv"
    with monkeypatch.context() as patch:
        patch.setitem(sampling.MODES, name, dataclasses.replace(mode, run=stopped_after_4))
        with pytest.raises(_Interrupted):
            certify_to_tsv(model, out, batch=1000, **options)
    partial = partial_path(out)
    assert len(partial.read_text().splitlines()) == 5 and not out.exists()  # header, 4 rows
    assert json.loads(partial.with_suffix(".json").read_text())["run"]["batch"] == 1000

    certify_to_tsv(model, out, batch=37, **options)
    reference = certify_to_tsv(model, tmp_path / "reference.tsv", batch=1000, **options)
    resumed = read_table(out)
    assert [int(row["idx"]) for row in resumed] == list(range(30))
    assert without_time(resumed) == without_time(read_table(reference))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["run"]["batch"] == 37
    assert side["result"] == json.loads(reference.with_suffix(".json").read_text())["result"]
