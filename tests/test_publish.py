"""A report is published as one transaction (l1cert.transaction): the journal, its roll-forward,
the lock of the out dir, a kill at every rename, and two reports racing for one folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RACE_ROUNDS, RENAMES, Killed, kill_at, kill_points, race, write_certify_file

from l1cert import transaction
from l1cert.cli import main
from l1cert.layout import all_bounds, expected_outputs
from l1cert.noise import NOISES
from l1cert.publish import JOURNAL, STAGING, recover

SRC = Path(__file__).resolve().parents[1] / "src"
# Deterministic PDFs (matplotlib stamps the creation date otherwise), so that every output of
# a report can be compared byte for byte with a reference run's.
ENV = {**os.environ, "PYTHONPATH": str(SRC), "SOURCE_DATE_EPOCH": "0"}


# --- l1cert.transaction --------------------------------------------------------------------


# --- the report ----------------------------------------------------------------------------


def _certify_files(folder: Path, n: int) -> list[Path]:
    """Two digits certify files (laplace, gaussian) of the same vote shares; `n` differs
    between the input sets, and with it every bound and radius, so that every table, plot,
    caption and figure showing data differs. A quarter of the points abstain."""
    rows = []
    for i in range(12):
        count = round(n * (0.3 if i % 4 == 0 else 0.55 + 0.1 * (i % 5)))
        rows.append({"idx": i, "label": i % 10, "count": count,
                     "count_b": round(0.6 * (n - count)), "top_class": i % 10})  # fmt: skip
    return [
        write_certify_file(folder / f"{noise}.tsv", noise, 0.5, rows, n=n)
        for noise in ("laplace", "gaussian")
    ]


OLD = {"n": 1000, "args": ["--radii", "0,0.5", "--fig6-sigma", "0.5"]}
NEW = {"n": 2000, "args": ["--radii", "0,0.25,1", "--fig6-sigma", "0.25"]}


def _report_argv(files, out, args) -> list[str]:
    return ["report", *map(str, files), "--out-dir", str(out), *args]


def _cli(argv):
    result = CliRunner().invoke(main, argv)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def deterministic_pdfs():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOURCE_DATE_EPOCH", "0")
        yield


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, deterministic_pdfs):
    root = tmp_path_factory.mktemp("inputs")
    return _certify_files(root / "old", OLD["n"]), _certify_files(root / "new", NEW["n"])


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, inputs) -> Path:
    """The old and the new report, rendered once (in `old` and `new`)."""
    root = tmp_path_factory.mktemp("refs")
    for name, files, spec in (("old", inputs[0], OLD), ("new", inputs[1], NEW)):
        assert _cli(_report_argv(files, root / name, spec["args"])).exit_code == 0
    return root


@pytest.fixture(scope="module")
def refs(rendered):
    """sha256 of each output of the old and the new report."""
    return _references(rendered)


def _old_report(rendered: Path, out: Path) -> Path:
    """A copy of the old report, as a report run into `out` leaves it."""
    shutil.copytree(rendered / "old", out)
    return out


def _digests(out: Path) -> dict[str, str]:
    return {
        str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in expected_outputs(out, ["digits"])
        if p.is_file()
    }


def _which(out: Path, references: dict[str, dict[str, str]]) -> str:
    """The name of the reference whose outputs `out` holds, wherever they differ ('mixed' if
    some files come from one and some from another; a file of neither fails)."""
    found = _digests(out)
    assert set(found) == set(next(iter(references.values()))), "outputs missing"
    names = set()
    for name, digest in found.items():
        matching = {ref for ref, files in references.items() if files[name] == digest}
        assert matching, f"{name} is neither report"
        if len(matching) == 1:
            names |= matching
    return names.pop() if len(names) == 1 else "mixed"


def _references(root: Path) -> dict[str, dict[str, str]]:
    refs = {name: _digests(root / name) for name in ("old", "new")}
    differing = {f for f in refs["old"] if refs["old"][f] != refs["new"][f]}
    # only the figure that shows no data, its caption, and the DVC metric's empty rows of the
    # bounds neither input has are the same in both
    same = set(refs["old"]) - differing
    shown = {b for noise in ("laplace", "gaussian") for b in NOISES[noise].bounds}
    assert same == {
        "figures/bound-comparison.png",
        "figures/bound-comparison.pdf",
        "captions/bound-comparison.rst",
        *(f"summary/{b}.json" for b in all_bounds() if b not in shown),
    }
    return refs


def _clean(out: Path) -> bool:
    return not (out / JOURNAL).exists() and not list(out.glob(f"{STAGING}*"))


def test_a_report_killed_after_its_commit_point_is_finished_first_by_the_next_run(
    tmp_path, inputs, rendered, refs, monkeypatch
):
    out = _old_report(rendered, tmp_path / "out")
    renames = kill_at(monkeypatch, 10**9)
    assert _cli(_report_argv(inputs[1], tmp_path / "count", NEW["args"])).exit_code == 0
    total = renames[0]
    kill_at(monkeypatch, total - 5)  # five files short of the whole new report
    with pytest.raises(Killed):
        _cli(_report_argv(inputs[1], out, NEW["args"]))
    monkeypatch.undo()
    assert _which(out, refs) == "mixed" and (out / JOURNAL).exists()

    # Any run into the folder finishes it first, even one whose input is then refused.
    result = _cli(_report_argv([tmp_path / "missing.tsv"], out, []))
    assert result.exit_code == 2 and "no such certify file" in result.stderr
    assert _which(out, refs) == "new" and _clean(out)


COHEN = Path(__file__).parent / "data/cohen/cifar10/noise_0.25/test/sigma_0.25"


def _outputs(out: Path) -> set[str]:
    """Every file in `out` but the lock, and the staging a killed run leaves to the next."""
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    return {n for n in names if not n.startswith((STAGING, f"{JOURNAL}.tmp", ".report.lock"))}


def test_a_report_with_fewer_inputs_removes_what_the_first_one_wrote(tmp_path, inputs, monkeypatch):
    """The second report leaves exactly its own files, also when killed at any rename and
    finished by the next command into the folder (here a failing one)."""
    out, two = tmp_path / "out", tmp_path / "two"
    wide = [*inputs[0], COHEN, "--dataset", "cifar10"]  # digits and cifar10
    assert _cli(_report_argv(wide, two, OLD["args"])).exit_code == 0
    first = _outputs(two)
    assert any(name.startswith("figures/cifar10-") for name in first)
    assert _cli(_report_argv(inputs[1], out, NEW["args"])).exit_code == 0
    narrow = _outputs(out)  # digits only
    assert json.loads((out / ".report-outputs.json").read_text()) == sorted(
        narrow - {".report-outputs.json"}
    )
    real, targets = os.replace, []
    monkeypatch.setattr(os, "replace", lambda src, dst: (targets.append(dst), real(src, dst)))
    shutil.rmtree(out)
    shutil.copytree(two, out)
    assert _cli(_report_argv(inputs[1], out, NEW["args"])).exit_code == 0
    monkeypatch.undo()
    assert _outputs(out) == narrow and _clean(out)  # the cifar10 files went
    journal_at = 1 + next(i for i, t in enumerate(targets) if str(t).endswith(JOURNAL))
    # before the commit point, the journal's, the first removals, the first new file, the last
    for k in (journal_at - 1, journal_at, journal_at + 1, journal_at + 2, len(targets)):
        shutil.rmtree(out)
        shutil.copytree(two, out)
        kill_at(monkeypatch, k)
        with pytest.raises(Killed):
            _cli(_report_argv(inputs[1], out, NEW["args"]))
        monkeypatch.undo()
        assert _cli(["report", "--out-dir", str(out), "--radii", "x"]).exit_code == 2
        assert _outputs(out) in (first, narrow) and not (out / JOURNAL).exists(), f"K={k}"


def test_a_file_named_like_an_output_that_no_report_wrote_is_refused(tmp_path, inputs):
    out = tmp_path / "out"
    mine = out / "figures" / "cifar10-envelope.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"my own figure")
    result = _cli(_report_argv(inputs[1], out, NEW["args"]))
    assert result.exit_code == 2 and result.stderr == (
        f"l1cert: error: {out} holds 1 file(s) named like report outputs that no report wrote "
        "there (figures/cifar10-envelope.png); move them away or choose another --out-dir\n"
    )
    assert mine.read_bytes() == b"my own figure" and not (out / "tables").exists()
    (out / "notes.txt").write_text("kept\n")  # a file no report names is left alone
    mine.unlink()
    assert _cli(_report_argv(inputs[1], out, NEW["args"])).exit_code == 0
    assert (out / "notes.txt").read_text() == "kept\n"


def test_a_target_that_is_a_directory_leaves_the_old_report_whole(tmp_path, inputs, rendered, refs):
    out = _old_report(rendered, tmp_path / "out")
    blocker = out / "plots" / "digits-uniform.csv"  # the last plot file published
    saved = blocker.read_bytes()
    blocker.unlink()
    blocker.mkdir()
    result = _cli(_report_argv(inputs[1], out, NEW["args"]))
    assert result.exit_code == 2 and "digits-uniform.csv is a directory" in result.stderr
    blocker.rmdir()
    blocker.write_bytes(saved)
    assert _which(out, refs) == "old" and _clean(out)  # every other file as it was


def test_metrics_outside_the_out_dir_are_published_with_the_report(tmp_path, inputs, monkeypatch):
    out, metrics = tmp_path / "out", tmp_path / "elsewhere" / "m.json"
    args = [*NEW["args"], "--metrics", str(metrics)]
    renames = kill_at(monkeypatch, 10**9)
    count = [*NEW["args"], "--metrics", str(tmp_path / "count" / "m.json")]
    assert _cli(_report_argv(inputs[1], tmp_path / "count", count)).exit_code == 0
    kill_at(monkeypatch, renames[0])  # the last rename: the metrics file's
    with pytest.raises(Killed):
        _cli(_report_argv(inputs[1], out, args))
    monkeypatch.undo()
    assert not metrics.exists() and len(list(metrics.parent.iterdir())) == 1  # staged beside
    assert recover(out) == 1
    assert json.loads(metrics.read_text()) == json.loads((tmp_path / "count/m.json").read_text())
    assert list(metrics.parent.iterdir()) == [metrics] and _clean(out)


def test_a_journal_moving_what_no_report_moves_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    (out / JOURNAL).write_text(
        json.dumps({"format": "l1cert-journal/1", "pairs": [[str(victim), "tables/x.csv"]]})
    )
    result = _cli(["report", "x.tsv", "--out-dir", str(out)])
    assert result.exit_code == 2 and "which its writer never does" in result.stderr
    assert victim.read_text() == "mine\n" and not (out / "tables").exists()


def test_a_second_report_into_the_same_folder_is_refused_at_once(tmp_path, inputs):
    out = tmp_path / "out"
    with transaction.exclusive_lock(out / ".report"):
        started = time.monotonic()
        result = _cli(_report_argv(inputs[0], out, OLD["args"]))
        assert time.monotonic() - started < 30
    assert result.exit_code == 2
    assert result.stderr == (
        f"l1cert: error: report folder {out} is being written by pid {os.getpid()} on "
        f"{os.uname().nodename} (lock {out}/.report.lock)\n"
    )
    assert sorted(p.name for p in out.iterdir()) == [".report.lock"]


# --- real processes: a SIGKILL at every rename, and two reports racing -----------------------


def _run(argv, strace=()):
    return subprocess.run(
        [*strace, sys.executable, "-m", "l1cert.cli", *argv],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


STRACE = ["strace", "-qq", "-e", f"trace={RENAMES}"]


def _counting_strace() -> list[str]:
    """strace counting the renames, with --seccomp-bpf where this strace and kernel have it:
    the report then stops at its renames only, not at each of its 200 000 system calls (most
    of them matplotlib reading its font for every PDF), which made a traced report 2.5 times
    slower. It needs -f, which then costs nothing (none but the main thread renames). Not for
    the kills: strace 6.1 ignores an injected signal under --seccomp-bpf."""
    fast = [*STRACE, "-f", "--seccomp-bpf"]
    probe = subprocess.run([*fast, "-o", os.devnull, "true"], capture_output=True, text=True)
    return fast if probe.returncode == 0 and not probe.stderr else STRACE


def _start_killed(argv, k: int, log: Path) -> subprocess.Popen:
    """A real `l1cert argv` that strace SIGKILLs at its k-th rename, started (stderr: `log`)."""
    kill = [*STRACE, "-o", os.devnull, "-e", f"inject={RENAMES}:signal=KILL:when={k}"]
    with open(log, "w") as err:
        return subprocess.Popen([*kill, sys.executable, "-m", "l1cert.cli", *argv], env=ENV,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")
def test_a_report_killed_at_every_rename_is_old_or_new(tmp_path, inputs, rendered, refs):
    """strace SIGKILLs a real `l1cert report` at its K-th rename, over an old report. A report
    that then fails on an unknown option rolls the folder forward first: it holds the old
    report if the kill came before the journal was in place and the new one after; the next
    report with the new inputs leaves the whole new report. The report renames
    in its main thread only, so strace counts the renames of that thread. The next K's killed
    report runs while this one's folder is checked (each in a folder of its own)."""
    new_files = inputs[1]
    trace = tmp_path / "trace"
    counted = _run(_report_argv(new_files, tmp_path / "count", NEW["args"]),
                   [*_counting_strace(), "-o", str(trace)])  # fmt: skip
    if counted.returncode != 0 and "ptrace" in counted.stderr.lower():
        pytest.skip(f"strace cannot trace here: {counted.stderr.strip().splitlines()[0]}")
    assert counted.returncode == 0, counted.stderr
    renames = [line for line in trace.read_text().splitlines() if "rename" in line]
    journal_at = next(i for i, line in enumerate(renames, 1) if JOURNAL in line)
    outputs = len(expected_outputs(tmp_path, ["digits"]))
    # staged figures, the journal, the manifest of the outputs, each output
    assert len(renames) == journal_at + 1 + outputs

    def start(k: int):
        out = _old_report(rendered, tmp_path / f"k{k}")
        log = tmp_path / f"k{k}.log"
        return k, out, log, _start_killed(_report_argv(new_files, out, NEW["args"]), k, log)

    # the journal (the commit point), the first output after it
    kills, seen = kill_points(len(renames), {journal_at, journal_at + 1}), set()
    pending = start(kills[0])
    for following in [*kills[1:], None]:
        k, out, log, killed = pending
        code = killed.wait(timeout=300)
        assert code in (-9, 128 + 9), f"K={k}: not killed: {log.read_text()}"
        pending = start(following) if following is not None else None
        assert (out / JOURNAL).exists() == (k > journal_at), f"K={k}"
        seen.add(_which(out, refs))
        # A report that fails on its own command line still finishes the killed one first.
        failing = _cli([*_report_argv(new_files, out, NEW["args"]), "--no-such-option"])
        assert failing.exit_code == 2 and "no-such-option" in failing.stderr, f"K={k}"
        assert _which(out, refs) == ("old" if k <= journal_at else "new"), f"K={k}"
        assert not (out / JOURNAL).exists(), f"K={k}"  # staging before it: the next run's
        if k in (kills[0], journal_at + 1, kills[-1]):  # the same path at every other K
            again = _cli(_report_argv(new_files, out, NEW["args"]))
            assert again.exit_code == 0, f"K={k}: {again.stderr}"
            assert _which(out, refs) == "new" and _clean(out), f"K={k}"
        shutil.rmtree(out)
    assert seen == {"old", "mixed"}  # the kills did land between the renames


@pytest.mark.slow
def test_two_reports_into_one_folder_never_both_publish(tmp_path, inputs, refs):
    old_files, new_files = inputs
    out = tmp_path / "out"
    runs = {"old": (old_files, OLD["args"]), "new": (new_files, NEW["args"])}
    for round in range(RACE_ROUNDS):
        order = ["old", "new"] if round % 2 else ["new", "old"]
        done = race({name: _report_argv(runs[name][0], out, runs[name][1]) for name in order},
                    env=ENV)  # fmt: skip
        codes = sorted(code for code, _ in done.values())
        assert codes == [0, 2], f"round {round}: {done}"
        winner = next(name for name, (code, _) in done.items() if code == 0)
        _, loser_err = next(v for name, v in done.items() if name != winner)
        assert loser_err.count("\n") == 1, loser_err
        # the holder's pid, or (if it was caught between its flock and writing its pid) none
        assert loser_err.startswith(f"l1cert: error: report folder {out} is being written by ")
        assert f"(lock {out}/.report.lock)" in loser_err, loser_err
        assert _which(out, refs) == winner and _clean(out), f"round {round}"
        metrics = json.loads((out / "metrics.json").read_text())
        radii = next(iter(metrics.values()))["certified_accuracy"].keys()
        header = (out / "tables" / "certified-accuracy.csv").read_text().splitlines()[0]
        assert ",".join(f"r={r}" for r in radii) + ",passes_mean," in header  # then the cost
