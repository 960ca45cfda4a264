"""Shared helpers: atomic writes."""

import os
import stat
import time

import pytest

from l1cert.utils import LoggedStream, atomic_path, atomic_write_text


def test_atomic_write_replaces_the_file_with_usual_permissions(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temporary left


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("computed")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "computed"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_progress_off_a_terminal_writes_a_few_updates_not_one_per_step(monkeypatch):
    import io

    from l1cert.utils import progress

    log = io.StringIO()  # a job's log file: not a terminal
    monkeypatch.setattr("sys.stderr", log)
    for _ in progress(range(40), desc="work"):
        time.sleep(0.02)  # a terminal's bar would redraw 8 times
    updates = log.getvalue().count("\r")
    assert 1 <= updates <= 3 and "40/40" in log.getvalue()


def test_a_logged_stream_keeps_lines_and_a_progress_bar_s_last_state(tmp_path):
    import io

    terminal, log = io.StringIO(), open(tmp_path / "job.log", "w")
    stream = LoggedStream(terminal, log)
    stream.write("read data\nepoch 1: 10%\repoch 1: 50%")
    stream.write("\repoch 1: 100%\ndone")
    stream.close_log()
    assert terminal.getvalue() == "read data\nepoch 1: 10%\repoch 1: 50%\repoch 1: 100%\ndone"
    assert (tmp_path / "job.log").read_text() == "read data\nepoch 1: 100%\ndone\n"
