"""Publishing several files as one transaction, and one writer per output.

Design: a roll-forward (redo) journal. A command renders every new file into a staging area
on the same file system as its target, then

1. checks every target before touching any: not a directory, its folder creatable and
   writable, no two staged files for one target;
2. fsyncs the staged files and writes the journal, a JSON list of staged -> target pairs,
   atomically (temporary file, fsync, rename, fsync of the folder). The journal's existence
   is the commit point: before it, the old files are all in place; after it, the new ones
   will be;
3. renames each staged file onto its target, fsyncs the folders, and removes the journal and
   the staging folders it lists.

A run killed anywhere in step 3 leaves the journal behind; the next run that writes into the
same place calls `roll_forward` first, under the same lock, which finishes the renames whose
staged file still exists and then removes the journal. Readers therefore see the old set or,
once the journal is rolled forward, the new set, never a mix that lasts. Rolling forward
(rather than back) needs no copy of the old files, and each step is a plain rename, so the
files keep their final names: DVC and Snakemake, which declare every output by its path, find
the same paths as before, and the staging folder, journal and lock file are dot-files beside
them that neither declares. A journal names paths relative to its own folder where they lie
under it, so a folder moved or copied after a crash still rolls forward onto itself. (Both
engines delete a job's declared outputs before rerunning it; a roll-forward then simply moves
the staged files onto paths that are free.)

`l1cert report` publishes its tables, figures, plot data, captions and metrics this way, the
journal at OUT/.report-journal.json; `l1cert merge` and `l1cert certify` publish their TSV and
sidecar the same way (a commit of two pairs under the lock of the output, the journal in the
output's partial/ folder).

`exclusive_lock` keeps a second writer out at once (flock: advisory, local to one machine on
most network file systems). Pure standard library, torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from l1cert.utils import L1CertError

JOURNAL_FORMAT = "l1cert-journal/1"

Pair = tuple[Path, Path]


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str | None = None) -> Iterator[None]:
    """Hold an flock on `path`.lock for the block; a second writer fails at once with one line
    naming the holder (`what` names what is being written; default: `path`).

    flock is advisory and local to one machine on most network file systems (NFS with local
    locks): it keeps two jobs on the same node apart, and SLURM requeues use the same node or
    start after the first job ended. The lock file stays (removing it would race).
    """
    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            message = f"{what or path} is being written by {holder} (lock {lock})"
            raise L1CertError(message) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the lock


def check_targets(pairs: Iterable[Pair]) -> None:
    """Refuse, before any rename, a set of moves that could not all be done: a missing staged
    file, a target that is a directory, two files for one target, a folder that cannot be
    made or written. Creates the targets' missing folders."""
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        if not source.is_file() or source.is_symlink():
            raise L1CertError(f"staged file {source} is missing")
        if target.is_dir() and not target.is_symlink():
            raise L1CertError(f"{target} is a directory; cannot write a file there")
        key = Path(os.path.realpath(target))
        if key in seen:
            raise L1CertError(f"{target} would be written twice (as {seen[key]} and {source})")
        seen[key] = source
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise L1CertError(f"cannot make the folder of {target}: a file is in the way") from None
        if not os.access(target.parent, os.W_OK | os.X_OK):
            raise L1CertError(f"cannot write into {target.parent}")


def commit(
    pairs: Iterable[tuple[str | os.PathLike, str | os.PathLike]],
    journal: str | os.PathLike,
    cleanup: Iterable[str | os.PathLike] = (),
) -> None:
    """Move every staged file onto its target as one transaction (see the module docstring);
    `cleanup` lists staging folders to remove once all are in place. The caller holds the
    lock of the place it writes, and has called `roll_forward(journal)` under it."""
    journal = Path(journal)
    pairs = [(Path(s), Path(t)) for s, t in pairs]
    cleanup = [Path(c) for c in cleanup]
    if journal.exists():
        raise L1CertError(f"{journal} is pending: roll it forward before a new commit")
    check_targets(pairs)
    for source, _ in pairs:
        _fsync_file(source)
    _write_journal(journal, pairs, cleanup)  # the commit point
    _finish(journal, pairs, cleanup)


def roll_forward(
    journal: str | os.PathLike,
    vet: Callable[[list[Pair], list[Path]], None] | None = None,
) -> int:
    """Finish the transaction a killed run left in `journal`, if any: rename each staged file
    that still exists onto its target, then remove the journal and the staging folders it
    lists. `vet(pairs, cleanup)` raises an L1CertError if the journal moves or removes what
    its writer never would (a journal is only data). Returns the number of files moved.
    Call it under the lock of the place the journal belongs to."""
    journal = Path(journal)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_journal_tmp(journal))  # a journal never completed: nothing was committed
    try:
        text = journal.read_bytes().decode()
    except FileNotFoundError:
        return 0
    except (OSError, UnicodeDecodeError) as err:
        raise L1CertError(f"cannot read the pending journal {journal}: {err}") from None
    pairs, cleanup = _parse_journal(journal, text)
    if vet is not None:
        vet(pairs, cleanup)
    moved = sum(1 for source, _ in pairs if os.path.lexists(source))
    _finish(journal, pairs, cleanup)
    return moved


def _finish(journal: Path, pairs: list[Pair], cleanup: list[Path]) -> None:
    folders = set()
    for source, target in pairs:
        if not os.path.lexists(source):
            continue  # moved before the kill
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
        except OSError as err:
            raise L1CertError(
                f"cannot move {source} onto {target} ({err.strerror or err}); the journal "
                f"{journal} stays, and the next run finishes it"
            ) from None
        folders.add(target.parent)
    for folder in folders:
        _fsync_dir(folder)
    os.unlink(journal)
    _fsync_dir(journal.parent)
    for folder in cleanup:
        shutil.rmtree(folder, ignore_errors=True)


def vetter(journal: Path, moves, removes=lambda folder: False):
    """A `vet` for `roll_forward`: every pair must satisfy `moves(source, target)` and every
    folder to clean up `removes(folder)` (paths made absolute), else one line saying the
    journal asks for what its writer never does."""

    def vet(pairs: list[Pair], cleanup: list[Path]) -> None:
        for source, target in pairs:
            if not moves(Path(os.path.abspath(source)), Path(os.path.abspath(target))):
                raise L1CertError(
                    f"pending journal {journal} moves {source} onto {target}, which its writer "
                    "never does; check the files and remove the journal by hand"
                )
        for folder in cleanup:
            if not removes(Path(os.path.abspath(folder))):
                raise L1CertError(
                    f"pending journal {journal} removes {folder}, which its writer never does; "
                    "check the files and remove the journal by hand"
                )

    return vet


# --- the journal file ------------------------------------------------------------------------


def _journal_tmp(journal: Path) -> Path:
    return journal.with_name(journal.name + ".tmp")


def _relative(path: Path, base: Path) -> str:
    """`path` relative to `base` when it lies under it (lexically), else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(os.path.abspath(base)))
    except ValueError:
        return str(path)


def _write_journal(journal: Path, pairs: list[Pair], cleanup: list[Path]) -> None:
    base = journal.parent
    doc = {
        "format": JOURNAL_FORMAT,
        "pairs": [[_relative(s, base), _relative(t, base)] for s, t in pairs],
        "cleanup": [_relative(c, base) for c in cleanup],
    }
    tmp = _journal_tmp(journal)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        os.write(fd, (json.dumps(doc, indent=1) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, journal)
    _fsync_dir(base)


def _parse_journal(journal: Path, text: str) -> tuple[list[Pair], list[Path]]:
    base = journal.parent
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"not an {JOURNAL_FORMAT} journal")
        pairs = [(base / s, base / t) for s, t in doc["pairs"]]
        cleanup = [base / c for c in doc.get("cleanup", [])]
    except (ValueError, KeyError, TypeError) as err:
        raise L1CertError(
            f"pending journal {journal} is unreadable ({err}); check the files it covers and "
            "remove it by hand"
        ) from None
    return pairs, cleanup


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a directory
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
