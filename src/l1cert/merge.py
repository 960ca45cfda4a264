"""Merging the K shards of one certification into one file.

Shards must agree on every setting that decides their rows (`SHARED_SETTINGS`), on the code that
made them, and together hold every test point of the run exactly once.
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
from l1cert.resume import check_out, partial_path
from l1cert.transaction import exclusive_lock
from l1cert.utils import L1CertError, same_file, umask

# Settings every shard of one certification shares; merge refuses shards that differ on them.
SHARED_SETTINGS = (
    "model_sha256", "model_name", "training", "dataset", "split", "dataset_size",
    "num_classes", "noise", "sigma", "scale", "n0", "n", "alpha", "seed", "skip", "max",
    "shards", "columns", "code", "sampling", "radii", "looks", "compile", "precision",
)  # fmt: skip
# Compared too where a noise records them (Noise.sidecar: DSSN's grid and template).
NOISE_SETTINGS = ("grid", "offsets", "template_sha256")


def _differences(previous: dict, settings: dict, keys) -> list[str]:
    return [key for key in keys if previous.get(key) != settings.get(key)]


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
        transaction.roll_forward(_journal(out), _vetter(out))
        _publish(out, header, lines, merged)
    return out


def _merged(paths: list[Path]) -> tuple[list[str], list[str], dict]:
    """The merged file's header, its lines sorted by idx, and its sidecar (unsealed)."""
    sidecars = [fmt.read_sidecar(p) for p in paths]
    first = sidecars[0]
    missing = [key for key in SHARED_SETTINGS + ("shard",) if key not in first]
    if missing:
        raise L1CertError(f"{fmt.sidecar_path(paths[0])} lacks {', '.join(missing)}")
    for path, settings in zip(paths[1:], sidecars[1:], strict=True):
        changed = _differences(settings, first, SHARED_SETTINGS + NOISE_SETTINGS)
        if changed:
            key = changed[0]
            raise L1CertError(
                f"{path} and {paths[0]} disagree on {key} "
                f"({settings.get(key)!r} vs {first.get(key)!r}); they are not one certification"
            )
    _check_shard_numbers(paths, sidecars)

    rows: dict[int, str] = {}
    owner: dict[int, Path] = {}
    tables = [fmt.read_rows(path, first["num_classes"], torn="drop") for path in paths]
    for path, table in zip(paths, tables, strict=True):
        if table.header != first["columns"]:
            raise L1CertError(f"{path}: header does not match its sidecar's columns")
        for idx, line in table.lines().items():
            if idx in rows:
                raise L1CertError(f"shards {owner[idx]} and {path} overlap (both have idx {idx})")
            rows[idx], owner[idx] = line, path
    _check_complete(rows, owner, paths, sidecars)
    for path, settings, table in zip(paths, sidecars, tables, strict=True):
        fmt.check_sealed(path, settings, table)
        check_rows(path, table, settings)

    batches = {settings["batch"] for settings in sidecars}
    seconds = [settings.get("certify_seconds") for settings in sidecars]
    merged = {
        **{k: v for k, v in first.items() if k not in ("rows", "tsv_sha256")},
        "certify_seconds": None if None in seconds else round(sum(seconds), 3),
        "batch": batches.pop() if len(batches) == 1 else None,
        "shard": None,
        "points": len(rows),
        "merged_from": [str(p) for p in paths],
    }
    return first["columns"], [rows[idx] for idx in sorted(rows)], merged


def _publish(out: Path, header: list[str], lines: list[str], merged: dict) -> None:
    """Stage the TSV and its sealed sidecar in partial/, then move both in one transaction."""
    stage = Path(tempfile.mkdtemp(prefix=STAGING, dir=partial_path(out).parent))
    try:
        tsv, side = stage / out.name, fmt.sidecar_path(stage / out.name)
        with open(tsv, "w") as f:
            f.write("\t".join(header) + "\n")
            f.writelines(line + "\n" for line in lines)
        fmt.write_sidecar(tsv, fmt.seal(tsv, merged, len(lines)))
        for staged in (tsv, side):
            os.chmod(staged, 0o666 & ~umask())
        pairs = [(tsv, out), (side, fmt.sidecar_path(out))]
        transaction.commit(pairs, _journal(out), cleanup=[stage])
    finally:
        if not _journal(out).exists():  # not committed, or done: the staging goes
            shutil.rmtree(stage, ignore_errors=True)


STAGING = ".merge-staging-"


def _journal(out: Path) -> Path:
    """The merge's journal, in partial/ beside its output (ignored by DVC)."""
    return partial_path(out).with_name(f"{out.name}.journal.json")


def _vetter(out: Path):
    """What a merge's journal may hold: the TSV and its sidecar staged in partial/, moved onto
    `out` and its sidecar."""
    folder = partial_path(out).parent

    def vet(pairs, cleanup) -> None:
        targets = {os.path.abspath(t) for t in (out, fmt.sidecar_path(out))}
        for source, target in pairs:
            staged = Path(os.path.abspath(source)).parent
            if (
                os.path.abspath(target) not in targets
                or staged.parent != Path(os.path.abspath(folder))
                or not staged.name.startswith(STAGING)
            ):
                raise L1CertError(
                    f"pending journal {_journal(out)} moves {source} onto {target}, which no "
                    "merge does; check the files and remove the journal by hand"
                )
        for stage in cleanup:
            if Path(os.path.abspath(stage)).parent != Path(os.path.abspath(folder)):
                raise L1CertError(f"pending journal {_journal(out)} removes {stage}")

    return vet


def _check_shard_numbers(paths: list[Path], sidecars: list[dict]) -> None:
    total = sidecars[0]["shards"]
    seen: dict[int, Path] = {}
    for path, settings in zip(paths, sidecars, strict=True):
        k = settings["shard"]
        if k in seen:
            raise L1CertError(f"{seen[k]} and {path} are both shard {k}/{total} (overlap)")
        seen[k] = path
    missing = sorted(set(range(1, total + 1)) - set(seen))
    if missing:
        names = ", ".join(f"{k}/{total}" for k in missing)
        raise L1CertError(f"shard(s) {names} missing: merge needs all {total} shards")


def _check_complete(rows: dict, owner: dict, paths: list[Path], sidecars: list[dict]) -> None:
    first = sidecars[0]
    expected = select_indices(first["dataset_size"], first["skip"], first["max"])
    for path, shard in zip(paths, sidecars, strict=True):
        block = shard_block(expected, shard["shard"], shard["shards"])
        stray = sorted({idx for idx, source in owner.items() if source == path} - set(block))
        if stray:
            raise L1CertError(f"{path} has rows outside its shard (idx {stray[0]}, ...)")
        missing = [idx for idx in block if idx not in rows]
        if missing:
            raise L1CertError(
                f"{path} misses {len(missing)} of its {len(block)} test points (first idx "
                f"{missing[0]}); finish it by rerunning its certify command"
            )
