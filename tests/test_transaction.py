"""Publishing several files as one (`l1cert.transaction`): a journal, then renames; a commit
killed at any rename is rolled forward by the next run; one writer at a time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Killed, kill_at

from l1cert import transaction
from l1cert.utils import L1CertError


def _pairs(folder: Path, count: int = 5) -> list[tuple[Path, Path]]:
    """`count` old files in `folder` (two in a subfolder) and their staged new versions."""
    stage = folder / ".stage"
    pairs = []
    for i in range(count):
        name = f"sub/f{i}.txt" if i % 2 else f"f{i}.txt"
        target, source = folder / name, stage / name
        for path, text in ((target, f"old {i}\n"), (source, f"new {i}\n")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        pairs.append((source, target))
    return pairs


def _state(pairs) -> str:
    """'old', 'new', or 'mixed' over the targets of `pairs`."""
    found = {target.read_text().split()[0] for _, target in pairs}
    return found.pop() if len(found) == 1 else "mixed"


def test_commit_moves_every_file_and_leaves_no_journal(tmp_path):
    pairs = _pairs(tmp_path)
    transaction.commit(pairs, tmp_path / "j.json", cleanup=[tmp_path / ".stage"])
    assert _state(pairs) == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.txt", "f2.txt", "f4.txt", "sub"]


@pytest.mark.parametrize("k", range(1, 7))  # the journal's own rename, then the five files
def test_a_commit_killed_at_any_rename_is_old_or_rolls_forward_to_new(tmp_path, monkeypatch, k):
    pairs, journal = _pairs(tmp_path), tmp_path / "j.json"
    kill_at(monkeypatch, k)
    with pytest.raises(Killed):
        transaction.commit(pairs, journal, cleanup=[tmp_path / ".stage"])
    monkeypatch.undo()
    assert journal.exists() == (k > 1)  # the journal in place is the commit point
    assert transaction.roll_forward(journal) == (0 if k == 1 else len(pairs) - (k - 2))
    assert _state(pairs) == ("old" if k == 1 else "new")
    assert not journal.exists() and (tmp_path / ".stage").exists() == (k == 1)


def test_a_journal_rolls_forward_in_a_moved_folder(tmp_path, monkeypatch):
    """Paths under the journal's folder are stored relative to it."""
    folder = tmp_path / "a"
    pairs = _pairs(folder)
    kill_at(monkeypatch, 3)
    with pytest.raises(Killed):
        transaction.commit(pairs, folder / "j.json", cleanup=[folder / ".stage"])
    monkeypatch.undo()
    assert str(tmp_path) not in (folder / "j.json").read_text()
    moved = tmp_path / "b"
    folder.rename(moved)
    transaction.roll_forward(moved / "j.json")
    assert _state([(s, moved / t.relative_to(folder)) for s, t in pairs]) == "new"
    assert not (moved / ".stage").exists()


def test_a_target_that_is_a_directory_is_refused_before_any_rename(tmp_path):
    pairs = _pairs(tmp_path)
    pairs[-1][1].unlink()
    pairs[-1][1].mkdir()
    with pytest.raises(L1CertError, match="f4.txt is a directory"):
        transaction.commit(pairs, tmp_path / "j.json")
    assert _state(pairs[:-1]) == "old" and not (tmp_path / "j.json").exists()
    assert all(source.exists() for source, _ in pairs)


def test_two_files_for_one_target_are_refused(tmp_path):
    pairs = _pairs(tmp_path)
    with pytest.raises(L1CertError, match="would be written twice"):
        transaction.commit([*pairs, (pairs[1][0], pairs[0][1])], tmp_path / "j.json")
    assert _state(pairs) == "old"


def test_an_unreadable_journal_is_one_line(tmp_path):
    (tmp_path / "j.json").write_text('{"format": "l1cert-journal/1", "pairs": [[1]]}')
    with pytest.raises(L1CertError, match="pending journal .* is unreadable"):
        transaction.roll_forward(tmp_path / "j.json")


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path):
    with transaction.exclusive_lock(tmp_path / "x", what="folder x"):
        with pytest.raises(L1CertError) as err:
            with transaction.exclusive_lock(tmp_path / "x", what="folder x"):
                pass
    assert str(err.value).startswith(f"folder x is being written by pid {os.getpid()} on ")
    assert "\n" not in str(err.value)
    with transaction.exclusive_lock(tmp_path / "x"):  # released
        pass
