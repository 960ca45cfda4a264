"""Merging the K shards of one certification into one file.

Shards must agree on every setting that decides their rows (`SHARED_SETTINGS`), on the code that
made them, and together hold every test point of the run exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path

from l1cert import certify_format as fmt
from l1cert.points import select_indices, shard_block
from l1cert.rederive import check_rows
from l1cert.utils import L1CertError, atomic_path

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

    Refuses shards that disagree on settings or code, overlap, or leave test points out.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    if not paths:
        raise L1CertError("merge needs at least one shard TSV")
    if out.is_dir():
        raise L1CertError(f"--out {out} is a directory; give a file name such as {out}/run.tsv")
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
    merged = {
        **{k: v for k, v in first.items() if k not in ("rows", "tsv_sha256")},
        "batch": batches.pop() if len(batches) == 1 else None,
        "shard": None,
        "points": len(rows),
        "merged_from": [str(p) for p in paths],
    }
    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            f.write("\t".join(first["columns"]) + "\n")
            f.writelines(rows[idx] + "\n" for idx in sorted(rows))
        merged = fmt.seal(tmp, merged, len(rows))
        # The sidecar goes first: a crash between the renames leaves a pair that readers
        # refuse (digest mismatch), never an old TSV passing for the new one.
        fmt.write_sidecar(out, merged)
    return out


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
