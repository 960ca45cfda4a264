"""The protocol that makes certify resumable: a partial file, one writer, a sealed publish.

Rows grow in `partial/<name>` beside `--out` (pipeline engines delete a job's declared outputs
before running it), flushed as made; a restart validates that file against the run's settings
and code and carries on. One writer at a time: an exclusive lock beside the partial file
(`l1cert.transaction`). When every point is done the sidecar is sealed (row count, digest) and
the pair moved onto `--out`.
"""

from __future__ import annotations

import os
from pathlib import Path

from l1cert import certify_format as fmt
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


def refuse_changed(path: Path, previous: dict, settings: dict, keys) -> None:
    """One line naming the first of `keys` on which `previous` (a sidecar) differs."""
    changed = [key for key in keys if previous.get(key) != settings.get(key)]
    if not changed:
        return
    key = changed[0]
    if key == "code":
        code = previous.get("code") if isinstance(previous.get("code"), dict) else {}
        raise L1CertError(
            f"{path} was made by other l1cert code (version {code.get('version')}, "
            f"digest {str(code.get('sha256'))[:12]}); its rows cannot be mixed "
            f"with this code's: remove {path} and its .json to start afresh"
        )
    raise L1CertError(
        f"{path} was started with other settings ({key}: {previous.get(key)!r} there, "
        f"{settings[key]!r} now); rerun with its settings or use another --out"
    )


def _run_keys(settings: dict) -> list[str]:
    """The settings a restart must match: all but where the model file lies."""
    return [key for key in settings if key != "model"]


def already_complete(out: Path, settings: dict) -> bool:
    """True if `out` is this run's finished table (a rerun then changes nothing)."""
    if not out.exists():
        return False
    if not fmt.sidecar_path(out).exists():
        raise L1CertError(f"{out} exists without its sidecar; remove it or use another --out")
    previous = fmt.read_sidecar(out)
    refuse_changed(out, previous, settings, _run_keys(settings))
    fmt.check_sealed(out, previous, fmt.read_rows(out, settings["num_classes"]))
    return True


def prepare_partial(partial: Path, settings: dict, label_of=None) -> set[int]:
    """Start the partial file afresh or validate and repair it for resuming; return idxs done.

    Its rows are re-derived (`l1cert.rederive`; `label_of(idx)`: the dataset's label) before
    any is carried on, so an edited row is refused rather than sealed into the output."""
    if not partial.exists() or not fmt.sidecar_path(partial).exists():
        fmt.write_sidecar(partial, settings)
        _write_header(partial, settings)
        return set()
    refuse_changed(partial, fmt.read_sidecar(partial), settings, _run_keys(settings))
    raw = partial.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if not complete:  # killed while the header was written
        _write_header(partial, settings)
        return set()
    table = fmt.read_rows(partial, settings["num_classes"], torn="drop")
    if table.header != settings["columns"]:
        raise L1CertError(f"{partial}: unexpected header; remove it to start afresh")
    if not set(table.rows) <= set(shard_points(settings)):
        raise L1CertError(f"{partial}: rows outside this shard; remove it to start afresh")
    labels = None if label_of is None else {idx: label_of(idx) for idx in table.rows}
    check_rows(partial, table, settings, labels)
    if len(complete) != len(raw):  # a torn last line: drop it, only after every check passed
        with open(partial, "r+b") as f:
            f.truncate(len(complete))
            os.fsync(f.fileno())
    return set(table.rows)


def _write_header(path: Path, settings: dict) -> None:
    atomic_write_text(path, "\t".join(settings["columns"]) + "\n")


def publish(partial: Path, out: Path, settings: dict, rows: int, seconds=None, done=()) -> None:
    """Sort the rows by idx, seal the sidecar with the finished table's digest and the
    certification's wall time (`seconds` of this run, plus the row times of the points `done`
    by runs before it), then move the pair onto `out`."""
    table = fmt.read_rows(partial, settings["num_classes"])
    if seconds is not None:
        at = table.header.index("time")
        seconds += sum(float(table.rows[idx][at]) for idx in done)
    with atomic_path(partial) as tmp:
        tmp.write_text(
            "\t".join(table.header)
            + "\n"
            + "".join(line + "\n" for _, line in sorted(table.lines().items()))
        )
    sealed = fmt.seal(partial, settings, rows)
    if seconds is not None:
        sealed["certify_seconds"] = round(seconds, 3)
    fmt.write_sidecar(partial, sealed)
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(fmt.sidecar_path(partial), fmt.sidecar_path(out))
    os.replace(partial, out)
