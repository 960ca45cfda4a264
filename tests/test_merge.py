"""`l1cert merge` publishes its TSV and sidecar as one transaction under a lock, and re-derives
the rows it reads; `l1cert certify` re-derives a partial file's rows before resuming it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    FAST,
    RACE_ROUNDS,
    RENAMES,
    kill_points,
    race,
    read_table,
    run_cli,
    without_time,
)

from l1cert import certify_format as fmt
from l1cert import transaction
from l1cert.certify import certify_to_tsv
from l1cert.merge import _vetter
from l1cert.resume import journal, partial_path


@pytest.fixture(scope="module")
def shard_sets(checkpoint, tmp_path_factory):
    """Two certifications of the same model (seeds 3 and 4), each in two shards."""
    root = tmp_path_factory.mktemp("shards")
    found = {}
    for name, seed in (("old", 3), ("new", 4)):
        found[name] = [
            certify_to_tsv(
                checkpoint, root / name / f"s{k}.tsv", shard=(k, 2), **{**FAST, "seed": seed}
            )  # fmt: skip
            for k in (1, 2)
        ]
    return found


def _pair(out: Path) -> tuple[bytes, bytes]:
    return out.read_bytes(), fmt.sidecar_path(out).read_bytes()


def _merge(files, out, strace=()):
    return subprocess.run(
        [*strace, sys.executable, "-m", "l1cert.cli", "merge", *map(str, files), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def references(shard_sets, tmp_path_factory):
    root = tmp_path_factory.mktemp("references")
    found = {}
    for name, files in shard_sets.items():
        assert _merge(files, root / f"{name}.tsv").returncode == 0
        found[name] = _pair(root / f"{name}.tsv")
    assert found["old"] != found["new"]
    return found


def _which(out: Path, references) -> str:
    pair = _pair(out)
    return next((name for name, ref in references.items() if ref == pair), "mixed")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_merge_killed_at_every_rename_is_old_or_new(tmp_path, shard_sets, references):
    """strace SIGKILLs a real `l1cert merge` at its K-th rename over an old merged pair: rolled
    forward, the pair is the old one if the kill came before the journal and the new one after;
    the next merge leaves the new pair."""
    trace = tmp_path / "trace"
    count = ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={RENAMES}"]
    counted = _merge(shard_sets["new"], tmp_path / "count.tsv", count)
    assert counted.returncode == 0, counted.stderr
    renames = [line for line in trace.read_text().splitlines() if "rename" in line]
    journal_at = next(i for i, line in enumerate(renames, 1) if "journal" in line)
    assert len(renames) == journal_at + 2  # staged sidecar, the journal, TSV and sidecar
    seen = set()
    for k in range(1, len(renames) + 1):
        out = tmp_path / f"k{k}" / "merged.tsv"
        out.parent.mkdir()
        out.write_bytes(references["old"][0])
        fmt.sidecar_path(out).write_bytes(references["old"][1])
        kill = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
                "-e", f"inject={RENAMES}:signal=KILL:when={k}"]  # fmt: skip
        killed = _merge(shard_sets["new"], out, kill)
        assert killed.returncode in (-9, 128 + 9), f"K={k}: not killed: {killed.stderr}"
        seen.add(_which(out, references))
        transaction.roll_forward(journal(out), _vetter(out))
        assert _which(out, references) == ("old" if k <= journal_at else "new"), f"K={k}"
        assert _merge(shard_sets["new"], out).returncode == 0
        assert _which(out, references) == "new"
    assert "mixed" in seen  # a kill did land between the two renames


@pytest.mark.slow
def test_two_merges_into_one_output_never_leave_a_mixed_pair(tmp_path, shard_sets, references):
    out = tmp_path / "merged.tsv"
    for round in range(RACE_ROUNDS):
        order = ["old", "new"] if round % 2 else ["new", "old"]
        done = race({name: ["merge", *shard_sets[name], "--out", out] for name in order},
                    timeout=120)  # fmt: skip
        winners = [name for name, (code, _) in done.items() if code == 0]
        for code, err in done.values():
            assert code in (0, 2), err
            if code == 2:
                assert "is being written by" in err and err.count("\n") == 1, err
        # both may succeed one after the other; the pair is always one of them, whole
        assert _which(out, references) in winners, f"round {round}: {done}"


def test_merge_refuses_an_output_that_is_an_input(shard_sets, tmp_path):
    first = shard_sets["old"][0]
    before = _pair(first)
    code, message = run_cli("merge", *shard_sets["old"], "--out", first)
    assert code == 2 and "would overwrite the input" in message
    assert _pair(first) == before


# --- rows re-derived --------------------------------------------------------------------------


def test_shards_of_other_batch_sizes_merge_to_one_run(checkpoint, shard_sets, tmp_path):
    """The batch size is how a shard ran (`run`), not what decides its rows (`result`)."""
    old = shard_sets["old"]
    other = certify_to_tsv(checkpoint, tmp_path / "s2.tsv", shard=(2, 2), **{**FAST, "batch": 37})
    assert fmt.read_sidecar(other)["run"]["batch"] == 37
    code, message = run_cli("merge", old[0], other, "--out", tmp_path / "merged.tsv")
    assert code == 0, message
    code, message = run_cli("merge", *old, "--out", tmp_path / "reference.tsv")
    assert code == 0, message
    merged_rows, reference = (read_table(tmp_path / n) for n in ("merged.tsv", "reference.tsv"))
    assert without_time(merged_rows) == without_time(reference)
    merged = fmt.read_sidecar(tmp_path / "merged.tsv")
    assert merged["run"]["batch"] is None  # shards of two batch sizes
    assert merged["result"] == fmt.read_sidecar(tmp_path / "reference.tsv")["result"]


def _certify(out: Path, model: Path, strace=()):
    args = [
        str(a) for k, v in FAST.items() if k != "progress"
        for a in (f"--{k.replace('_', '-')}", v)
    ]  # fmt: skip
    return subprocess.run(
        [*strace, sys.executable, "-m", "l1cert.cli", "certify", "--model", str(model),
         *args, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_certify_killed_at_every_rename_keeps_every_row(tmp_path, checkpoint):
    """strace SIGKILLs a real `l1cert certify` at its K-th rename (sidecar writes, the sorted
    rows, the journal, the published pair): the rerun never recomputes a row it had — every
    row's time is kept — and ends with the uninterrupted run's rows."""
    reference = tmp_path / "reference.tsv"
    trace = tmp_path / "trace"
    count = ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={RENAMES}"]
    assert _certify(reference, checkpoint, count).returncode == 0
    renames = [line for line in trace.read_text().splitlines() if "rename" in line]
    assert len(renames) >= 5 and any("journal" in line for line in renames)
    # from the rows sorted into place on: every row was made before the kill
    published = max(i for i, line in enumerate(renames, 1) if 'partial/reference.tsv"' in line)
    # the rows sorted into place, the journal (then the pair published: the last rename)
    journal_at = next(i for i, line in enumerate(renames, 1) if "journal" in line)
    for k in kill_points(len(renames), {published, journal_at}):
        out = tmp_path / f"k{k}" / "run.tsv"
        kill = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
                "-e", f"inject={RENAMES}:signal=KILL:when={k}"]  # fmt: skip
        killed = _certify(out, checkpoint, kill)
        assert killed.returncode in (-9, 128 + 9), f"K={k}: not killed: {killed.stderr}"
        partial = partial_path(out)
        had = {r["idx"]: r["time"] for r in read_table(partial)} if partial.exists() else {}
        if out.exists() and not had:  # published before the kill (wholly or in part)
            had = {r["idx"]: r["time"] for r in read_table(out)}
        done = _certify(out, checkpoint)
        assert done.returncode == 0, f"K={k}: {done.stderr}"
        rows = read_table(out)
        assert without_time(rows) == without_time(read_table(reference)), f"K={k}"
        assert all(r["time"] == had[r["idx"]] for r in rows if r["idx"] in had), f"K={k}"
        if k >= published:
            assert len(had) == len(rows), f"K={k}: rows were lost ({len(had)} kept)"
        leftovers = [p.name for p in partial.parent.iterdir() if not p.name.endswith(".lock")]
        assert leftovers == [], f"K={k}: {leftovers}"
