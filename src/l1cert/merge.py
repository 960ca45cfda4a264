"""Merging the K shards of one certification into one file.

Shards must agree on everything that decides their rows (their sidecars' `result`, the code
that made them included) and on K, and together hold every test point of the run exactly once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from l1cert import certify_format as fmt
from l1cert import transaction
from l1cert.points import select_indices, shard_block
from l1cert.rederive import check_rows
from l1cert.resume import check_out, journal, partial_path
from l1cert.transaction import exclusive_lock
from l1cert.utils import L1CertError, same_file, umask


def merge_shards(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge all K shards of one certification into `out`, rows sorted by idx, plus its sidecar.

    Refuses shards that disagree on settings or code, overlap, or leave test points out, and
    rows that their counts do not give (`l1cert.rederive`). One merge at a time per output (a
    lock in partial/ beside it), and the TSV and its sidecar are published as one transaction
    (`l1cert.transaction`): a merge killed at any moment leaves the old pair, or the new pair
    once the next merge has rolled it forward.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    if not paths:
        raise L1CertError("merge needs at least one shard TSV")
    if out.is_dir():
        raise L1CertError(f"--out {out} is a directory; give a file name such as {out}/run.tsv")
    outputs = (out, fmt.sidecar_path(out))
    for path in paths:
        for source in (path, fmt.sidecar_path(path)):
            if any(same_file(source, target) for target in outputs):
                raise L1CertError(f"--out {out} would overwrite the input {source}")
    check_out(out)
    header, lines, merged = _merged(paths)  # every input checked before anything is written
    with exclusive_lock(partial_path(out), what=f"merged output {out}"):
        transaction.roll_forward(journal(out), _vetter(out))
        for stale in partial_path(out).parent.glob(f"{_staging(out)}*"):  # of killed merges
            shutil.rmtree(stale, ignore_errors=True)
        _publish(out, header, lines, merged)
    return out


def _merged(paths: list[Path]) -> tuple[list[str], list[str], dict]:
    """The merged file's header, its lines sorted by idx, and its sidecar (unsealed)."""
    sidecars = [fmt.read_sidecar(p) for p in paths]
    first = sidecars[0]
    result = first["result"]
    for path, side in zip(paths[1:], sidecars[1:], strict=True):
        for section, keys in (("result", None), ("part", ("shards",))):
            ours, theirs = side[section], first[section]
            for key in keys or {**ours, **theirs}:
                if ours.get(key) != theirs.get(key):
                    raise L1CertError(
                        f"{path} and {paths[0]} disagree on {key} ({ours.get(key)!r} vs "
                        f"{theirs.get(key)!r}); they are not one certification"
                    )
    _check_shard_numbers(paths, sidecars)

    rows: dict[int, str] = {}
    owner: dict[int, Path] = {}
    tables = [fmt.read_rows(path, result["num_classes"], torn="drop") for path in paths]
    for path, table in zip(paths, tables, strict=True):
        if table.header != result["columns"]:
            raise L1CertError(f"{path}: header does not match its sidecar's columns")
        for idx, line in table.lines().items():
            if idx in rows:
                raise L1CertError(f"shards {owner[idx]} and {path} overlap (both have idx {idx})")
            rows[idx], owner[idx] = line, path
    _check_complete(rows, owner, paths, sidecars)
    for path, side, table in zip(paths, sidecars, tables, strict=True):
        fmt.check_sealed(path, side, table)
        check_rows(path, table, side["result"])

    batches = {side["run"].get("batch") for side in sidecars}
    seconds = [side.get("certify_seconds") for side in sidecars]
    merged = {
        "format": first["format"],
        "result": result,
        "part": {
            "shard": None,
            "shards": first["part"]["shards"],
            "points": len(rows),
            "total_points": first["part"]["total_points"],
        },  # fmt: skip
        "run": {
            "batch": batches.pop() if len(batches) == 1 else None,
            "merged_from": [str(p) for p in paths],
        },  # fmt: skip
        "certify_seconds": None if None in seconds else round(sum(seconds), 3),
    }
    return result["columns"], [rows[idx] for idx in sorted(rows)], merged


def _publish(out: Path, header: list[str], lines: list[str], merged: dict) -> None:
    """Stage the TSV and its sealed sidecar in partial/, then move both in one transaction."""
    stage = Path(tempfile.mkdtemp(prefix=_staging(out), dir=partial_path(out).parent))
    try:
        tsv, side = stage / out.name, fmt.sidecar_path(stage / out.name)
        with open(tsv, "w") as f:
            f.write("\t".join(header) + "\n")
            f.writelines(line + "\n" for line in lines)
        fmt.write_sidecar(tsv, fmt.seal(tsv, merged, len(lines)))
        for staged in (tsv, side):
            os.chmod(staged, 0o666 & ~umask())
        pairs = [(tsv, out), (side, fmt.sidecar_path(out))]
        transaction.commit(pairs, journal(out), cleanup=[stage])
    finally:
        if not journal(out).exists():  # not committed, or done: the staging goes
            shutil.rmtree(stage, ignore_errors=True)


STAGING = ".merge-staging-"


def _staging(out: Path) -> str:
    """The prefix of `out`'s staging folders in partial/, which other outputs share."""
    return f"{STAGING}{out.name}-"


def finish_publishing(out: str | os.PathLike) -> None:
    """What any merge into `out` does first: finish publishing a merge killed after its
    commit point, under the output's lock."""
    out = Path(out)
    if journal(out).exists():
        with exclusive_lock(partial_path(out), what=f"merged output {out}"):
            transaction.roll_forward(journal(out), _vetter(out))


def _vetter(out: Path):
    """What a merge's journal may hold: the TSV and its sidecar staged in a staging folder of
    `out` in partial/, moved onto `out` and its sidecar; those staging folders removed."""
    folder = Path(os.path.abspath(partial_path(out).parent))
    targets = {Path(os.path.abspath(t)) for t in (out, fmt.sidecar_path(out))}

    def staged(path: Path) -> bool:
        return path.parent == folder and path.name.startswith(_staging(out))

    return transaction.vetter(journal(out), lambda s, t: t in targets and staged(s.parent), staged)


def _check_shard_numbers(paths: list[Path], sidecars: list[dict]) -> None:
    total = sidecars[0]["part"]["shards"]
    seen: dict[int, Path] = {}
    for path, side in zip(paths, sidecars, strict=True):
        k = side["part"]["shard"]
        if k is None:
            raise L1CertError(f"{path} is a merged file, not a shard")
        if k in seen:
            raise L1CertError(f"{seen[k]} and {path} are both shard {k}/{total} (overlap)")
        seen[k] = path
    missing = sorted(set(range(1, total + 1)) - set(seen))
    if missing:
        names = ", ".join(f"{k}/{total}" for k in missing)
        raise L1CertError(f"shard(s) {names} missing: merge needs all {total} shards")


def _check_complete(rows: dict, owner: dict, paths: list[Path], sidecars: list[dict]) -> None:
    result = sidecars[0]["result"]
    expected = select_indices(result["dataset_size"], result["skip"], result["max"])
    for path, side in zip(paths, sidecars, strict=True):
        block = shard_block(expected, side["part"]["shard"], side["part"]["shards"])
        stray = sorted({idx for idx, source in owner.items() if source == path} - set(block))
        if stray:
            raise L1CertError(f"{path} has rows outside its shard (idx {stray[0]}, ...)")
        missing = [idx for idx in block if idx not in rows]
        if missing:
            raise L1CertError(
                f"{path} misses {len(missing)} of its {len(block)} test points (first idx "
                f"{missing[0]}); finish it by rerunning its certify command"
            )
