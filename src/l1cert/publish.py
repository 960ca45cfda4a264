"""How a report takes its out dir: one transaction that leaves exactly the new report there.

A report renders every file into a staging folder of the out dir, then publishes them with
`l1cert.transaction` (a journal, then renames) under the out dir's lock. The report owns the
files it writes and no others: a manifest (`.report-outputs.json`) lists the outputs of the
report published there, and the next report moves those it does not write again out of the
way in the same transaction, so the folder holds the old report or the new one, never a mix.
A file named like a report output that no report wrote there is the user's: the report
refuses the folder, naming it, rather than leave it beside its own outputs or delete it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from l1cert import transaction
from l1cert.certify_format import sidecar_path
from l1cert.layout import expected_outputs
from l1cert.runs import log
from l1cert.utils import L1CertError, same_file, umask

# Beside the outputs in the out dir: the lock (`.report.lock`), the journal of a publication
# under way, the staging folders the new files are rendered into, and the manifest.
LOCK = ".report"
JOURNAL = ".report-journal.json"
STAGING = ".report-staging-"
MANIFEST = ".report-outputs.json"
REMOVED = "removed"  # in a staging folder: the earlier outputs moved out of the way


def publish(
    out: Path,
    targets: Sequence[Path],
    metrics_file: Path,
    render: Callable[[Path, Path], list[Path]],
) -> list[Path]:
    """Publish a report into `out` as one transaction. `render(stage, metrics_stage)` writes
    every file of `targets` (inside `out`, the metrics file possibly outside) into the
    staging folder and the metrics file's staged copy, and returns their staged paths. The
    outputs of the report before it that it does not write are moved out in the same
    transaction. Returns the targets."""
    out.mkdir(parents=True, exist_ok=True)
    with _lock(out):
        transaction.roll_forward(out / JOURNAL, _vetter(out))
        for leftover in out.glob(f"{STAGING}*"):  # of killed runs: no one else holds the lock
            shutil.rmtree(leftover, ignore_errors=True)
        new = {_relative(out, t) for t in targets if inside(out, t)}
        stale = _earlier_outputs(out, new)
        stage = Path(tempfile.mkdtemp(prefix=STAGING, dir=out))
        metrics_stage = None
        try:
            metrics_stage = _metrics_stage(out, metrics_file, stage)
            staged = render(stage, metrics_stage)
            pairs = [(s, metrics_file if s == metrics_stage else out / s.relative_to(stage))
                     for s in staged]  # fmt: skip
            if sorted(map(str, (t for _, t in pairs))) != sorted(map(str, targets)):
                raise RuntimeError("the report rendered other files than expected_outputs")
            (stage / MANIFEST).write_text(json.dumps(sorted(new), indent=1) + "\n")
            pairs.insert(0, (stage / MANIFEST, out / MANIFEST))
            for source, _ in pairs:
                os.chmod(source, 0o666 & ~umask())
            pairs = [(out / name, stage / REMOVED / name) for name in stale] + pairs
            transaction.commit(pairs, out / JOURNAL, cleanup=[stage])
        finally:
            if not (out / JOURNAL).exists():  # not committed, or done: the staging goes
                shutil.rmtree(stage, ignore_errors=True)
                if metrics_stage is not None:
                    metrics_stage.unlink(missing_ok=True)
    for name in stale:
        log(f"removed {out / name} (an earlier report's output that this one does not write)")
    return list(targets)


def recover(out_dir: str | Path) -> int:
    """Finish publishing a report that was killed after its commit point in `out_dir`, under
    the out dir's lock; return the number of files it moved (0: nothing was pending)."""
    out = Path(out_dir)
    if not (out / JOURNAL).exists():
        return 0
    with _lock(out):
        return transaction.roll_forward(out / JOURNAL, _vetter(out))


finish_publishing = recover  # what any report into a folder does first (l1cert.cli)


def inside(out_dir: str | Path, path: str | Path) -> bool:
    """Whether `path`, every link resolved, lies under `out_dir` (resolved too)."""
    out = Path(os.path.realpath(out_dir))
    return Path(os.path.realpath(path)).is_relative_to(out)


def check_paths(
    out: Path, targets: Sequence[Path], metrics_path: str | Path | None, inputs: Sequence[Path]
) -> None:
    """Before anything is written: every output but the --metrics the user named lies inside
    the out dir, and no output (nor the lock, journal or manifest) is an input or an input's
    sidecar."""
    metrics_file = Path(metrics_path) if metrics_path else None
    for target in targets:
        if target != metrics_file and not inside(out, target):
            raise L1CertError(
                f"{target} would be written outside the out dir {out} (a link leads out)"
            )
    if metrics_file is not None and any(
        os.path.realpath(t) == os.path.realpath(metrics_file) for t in targets[:-1]
    ):
        raise L1CertError(f"--metrics {metrics_file} is also one of the report's other outputs")
    sources = [*inputs, *(sidecar_path(p) for p in inputs)]
    for output in [*targets, out / f"{LOCK}.lock", out / JOURNAL, out / MANIFEST]:
        for source in sources:
            if same_file(output, source):
                what = (
                    f"--metrics {output}"
                    if output == metrics_file
                    else f"the report would write {output}, which"
                )
                raise L1CertError(
                    f"{what} is also an input ({source}); a report never writes over what it "
                    "reads: choose another --out-dir or --metrics"
                )


# --- what the out dir holds ------------------------------------------------------------------


def _patterns(out: Path) -> list[str]:
    """Every output name a report of any datasets writes inside `out`, as glob patterns."""
    return [_relative(out, p) for p in expected_outputs(out, ["*"])]


def _report_like(out: Path, name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in _patterns(out))


def _earlier_outputs(out: Path, new: set[str]) -> list[str]:
    """The outputs of the report published in `out` that this one (writing `new`) does not
    write; refuses files named like outputs that no report wrote there."""
    written = set()
    if (out / MANIFEST).exists():
        try:
            written = set(json.loads((out / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise L1CertError(
                f"cannot read {out / MANIFEST} ({err}): it lists the files of the report "
                "published there; remove it and the report's files, or choose another --out-dir"
            ) from None
    # A manifest is data: only names a report writes are ever moved out of the way.
    written = {n for n in written if isinstance(n, str) and _report_like(out, n)}
    present = {
        _relative(out, path)
        for pattern in _patterns(out)
        for path in out.glob(pattern)
        if path.is_file() or path.is_symlink()
    }
    unknown = sorted(present - written - new)
    if unknown:
        shown = ", ".join(unknown[:3]) + (
            f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
        )
        raise L1CertError(
            f"{out} holds {len(unknown)} file(s) named like report outputs that no report wrote "
            f"there ({shown}); move them away or choose another --out-dir"
        )
    return sorted(n for n in written - new if n in present)


def _relative(out: Path, path: Path) -> str:
    return Path(path).relative_to(out).as_posix()


def _lock(out: Path):
    return transaction.exclusive_lock(out / LOCK, what=f"report folder {out}")


def _metrics_stage(out: Path, metrics_file: Path, stage: Path) -> Path:
    """Where the new metrics file is written: the staging folder when the metrics go inside
    the out dir, else a dot-file beside them (a rename never crosses file systems)."""
    if inside(out, metrics_file.parent):
        return stage / "metrics.json"
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{metrics_file.name}{STAGING}", suffix=".tmp", dir=metrics_file.parent
    )
    os.close(fd)
    return Path(tmp)


def _vetter(out: Path):
    """What a report's journal may hold: files staged in a staging folder of `out` (or beside
    the metrics file) moved inside `out` (or onto that metrics file), earlier outputs moved
    into a staging folder's `removed/`, and staging folders removed."""

    def staging_parts(path: Path) -> tuple[str, ...] | None:
        if not _under(out, path):
            return None
        rel = path.relative_to(os.path.abspath(out)).parts
        return rel if rel[0].startswith(STAGING) and len(rel) > 1 else None

    def moves(source: Path, target: Path) -> bool:
        beside = source.parent == target.parent and source.name.startswith(
            f".{target.name}{STAGING}"
        )
        if beside or (staging_parts(source) and inside(out, target)):
            return True
        removed = staging_parts(target)  # an earlier output moved out of the way
        return bool(
            removed
            and removed[1] == REMOVED
            and _under(out, source)
            and "/".join(removed[2:]) == _relative(Path(os.path.abspath(out)), source)
            and _report_like(out, "/".join(removed[2:]))
        )

    def removes(folder: Path) -> bool:
        return _under(out, folder) and folder.name.startswith(STAGING)

    return transaction.vetter(out / JOURNAL, moves, removes)


def _under(out: Path, path: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(out))
