"""The protocol that makes certify resumable: a partial file, one writer, a sealed publish.

Rows grow in `partial/<name>` beside `--out` (pipeline engines delete a job's declared outputs
before running it), flushed as made; a restart validates that file against the run's settings
and code and carries on. One writer at a time: an exclusive lock beside the partial file
(`l1cert.transaction`). When every point is done the sidecar is sealed (row count, digest) and
the pair moved onto `--out` as one transaction: a certify killed while publishing is finished
by the next one (`recover`), which never recomputes a row it had.
"""

from __future__ import annotations

import os
from pathlib import Path

from l1cert import certify_format as fmt
from l1cert import transaction
from l1cert.points import shard_points
from l1cert.rederive import check_rows
from l1cert.utils import L1CertError, atomic_path, atomic_write_text


def partial_path(out: str | os.PathLike) -> Path:
    """Where the rows of `out` grow until it is complete: partial/<name> beside it."""
    out = Path(out)
    return out.parent / "partial" / out.name


def check_out(out: Path) -> None:
    """Refuse an --out that can never be written, before any work."""
    if out.is_dir():
        raise L1CertError(f"--out {out} is a directory; give a file name such as {out}/run.tsv")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise L1CertError(f"--out {out}: {parent} is a file, not a directory")
            if not os.access(parent, os.W_OK):
                raise L1CertError(f"--out {out}: cannot write into {parent}")
            return


def refuse_changed(path: Path, previous: dict, side: dict) -> None:
    """One line naming the first setting of `result` or `part` on which the sidecar `previous`
    differs from this run's `side`; how the run goes (`run`) may differ."""
    for section in ("result", "part"):
        theirs, ours = previous[section], side[section]
        changed = [key for key in {**theirs, **ours} if theirs.get(key) != ours.get(key)]
        if not changed:
            continue
        key = changed[0]
        if key == "code":
            code = theirs.get("code") if isinstance(theirs.get("code"), dict) else {}
            raise L1CertError(
                f"{path} was made by other l1cert code (version {code.get('version')}, "
                f"digest {str(code.get('sha256'))[:12]}); its rows cannot be mixed "
                f"with this code's: remove {path} and its .json to start afresh"
            )
        raise L1CertError(
            f"{path} was started with other settings ({key}: {theirs.get(key)!r} there, "
            f"{ours.get(key)!r} now); rerun with its settings or use another --out"
        )


def already_complete(out: Path, side: dict) -> bool:
    """True if `out` is this run's finished table (a rerun then changes nothing)."""
    if not out.exists():
        return False
    if not fmt.sidecar_path(out).exists():
        raise L1CertError(f"{out} exists without its sidecar; remove it or use another --out")
    previous = fmt.read_sidecar(out)
    refuse_changed(out, previous, side)
    fmt.check_sealed(out, previous, fmt.read_rows(out, side["result"]["num_classes"]))
    return True


def prepare_partial(partial: Path, side: dict, example=None) -> set[int]:
    """Start the partial file afresh or validate and repair it for resuming; return idxs done.

    Its rows are re-derived (`l1cert.rederive`; `example(idx)`: the dataset's (input, label),
    where the caller has it) before any is carried on, so an edited row is refused rather than
    sealed into the output."""
    result = side["result"]
    if not partial.exists() or not fmt.sidecar_path(partial).exists():
        fmt.write_sidecar(partial, side)
        _write_header(partial, result)
        return set()
    refuse_changed(partial, fmt.read_sidecar(partial), side)
    raw = partial.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if not complete:  # killed while the header was written
        _write_header(partial, result)
        return set()
    table = fmt.read_rows(partial, result["num_classes"], torn="drop")
    if table.header != result["columns"]:
        raise L1CertError(f"{partial}: unexpected header; remove it to start afresh")
    if not set(table.rows) <= set(shard_points({**result, **side["part"]})):
        raise L1CertError(f"{partial}: rows outside this shard; remove it to start afresh")
    labels = points = None
    if example is not None:
        found = {idx: example(idx) for idx in table.rows}
        labels = {idx: int(label) for idx, (_, label) in found.items()}
        points = {idx: x.numpy().ravel() for idx, (x, _) in found.items()}
    check_rows(partial, table, result, labels, points)
    if len(complete) != len(raw):  # a torn last line: drop it, only after every check passed
        with open(partial, "r+b") as f:
            f.truncate(len(complete))
            os.fsync(f.fileno())
    fmt.write_sidecar(partial, side)  # how this run goes (its batch, threads) from now on
    return set(table.rows)


def _write_header(path: Path, result: dict) -> None:
    atomic_write_text(path, "\t".join(result["columns"]) + "\n")


def publish(partial: Path, out: Path, side: dict, rows: int, seconds=None, done=()) -> None:
    """Sort the rows by idx, seal the sidecar with the finished table's digest and the
    certification's wall time (`seconds` of this run, plus the row times of the points `done`
    by runs before it), then move the pair onto `out`."""
    table = fmt.read_rows(partial, side["result"]["num_classes"])
    if seconds is not None:
        at = table.header.index("time")
        seconds += sum(float(table.rows[idx][at]) for idx in done)
    with atomic_path(partial) as tmp:
        tmp.write_text(
            "\t".join(table.header)
            + "\n"
            + "".join(line + "\n" for _, line in sorted(table.lines().items()))
        )
    sealed = fmt.seal(partial, side, rows)
    if seconds is not None:
        sealed["certify_seconds"] = round(seconds, 3)
    fmt.write_sidecar(partial, sealed)
    pairs = [(partial, out), (fmt.sidecar_path(partial), fmt.sidecar_path(out))]
    transaction.commit(pairs, journal(out))


def journal(out: Path) -> Path:
    """The journal of publishing `out`, in partial/ beside it (ignored by DVC)."""
    return partial_path(out).with_name(f"{out.name}.journal.json")


def finish_publishing(out: str | os.PathLike) -> None:
    """What any certify into `out` does first, under the output's lock: `recover`."""
    out = Path(out)
    if journal(out).exists():
        with transaction.exclusive_lock(partial_path(out)):
            recover(out)


def recover(out: Path) -> None:
    """Under the output's lock: finish publishing a pair a killed run left half moved, and
    remove the temporary files a killed run left in partial/."""
    partial = partial_path(out)
    sources = {partial, fmt.sidecar_path(partial)}
    targets = {out, fmt.sidecar_path(out)}
    absolute = {os.path.abspath(p) for p in sources | targets}

    def moves(source: Path, target: Path) -> bool:
        return str(source) in absolute and str(target) in absolute and target != source

    transaction.roll_forward(journal(out), transaction.vetter(journal(out), moves))
    for name in (partial.name, fmt.sidecar_path(partial).name):
        for stale in partial.parent.glob(f".{name}.*.tmp"):  # of atomic writes cut short
            stale.unlink(missing_ok=True)
