"""Sharded, resumable certification of a test split, and the merge of its shards.

One TSV row per test point (DESIGN.md §3), flushed and fsync'd as it is made, so a run killed at
any moment resumes where it stopped. Beside each TSV a JSON sidecar (same path, suffix .json)
records the run's settings; a restart must match them, and `merge_shards` checks them across
shards. The noise for test point `idx` comes from a generator seeded by (seed, idx), so merged
shards equal a single run.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from l1cert.certify_format import columns, sidecar_path
from l1cert.noise import Noise, make_noise
from l1cert.smoothing import ABSTAIN, Certificate, Smooth
from l1cert.utils import L1CertError, atomic_path, atomic_write_text, resolve_device

SIDECAR_FORMAT = "l1cert-certify/1"

# Settings every shard of one certification shares; merge refuses shards that differ on them.
SHARED_SETTINGS = (
    "model_sha256", "dataset", "split", "dataset_size", "num_classes", "noise", "sigma",
    "scale", "n0", "n", "alpha", "seed", "skip", "max", "shards", "columns",
)  # fmt: skip


def parse_shard(text: str) -> tuple[int, int]:
    """'k/K' (1-based) -> (k, K)."""
    try:
        k, total = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise L1CertError(f"--shard must look like k/K (e.g. 2/4), got {text!r}") from None
    if total < 1 or not 1 <= k <= total:
        raise L1CertError(f"--shard {text}: need 1 <= k <= K")
    return k, total


def select_indices(dataset_size: int, skip: int, max_points: int) -> list[int]:
    """Every skip-th test index, at most max_points of them (-1: all), as Cohen et al. do."""
    indices = list(range(0, dataset_size, skip))
    return indices if max_points < 0 else indices[:max_points]


def shard_block(indices: list[int], k: int, total: int) -> list[int]:
    """Block k (1-based) of `indices` cut into `total` contiguous blocks of near-equal size."""
    size = len(indices)
    return indices[(k - 1) * size // total : k * size // total]


def point_generator(seed: int, idx: int, device: torch.device) -> torch.Generator:
    """The noise generator of test point idx: the same on every shard and every restart."""
    state = np.random.SeedSequence([seed, idx]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def check_arguments(sigma, n0, n, alpha, batch, seed, skip, max_points) -> None:
    if sigma is not None and not (float(sigma) > 0 and math.isfinite(sigma)):
        raise L1CertError(f"--sigma must be positive, got {sigma}")
    if not 0 < alpha < 1:
        raise L1CertError(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    for name, value in (("--n0", n0), ("--n", n), ("--batch", batch), ("--skip", skip)):
        if value < 1:
            raise L1CertError(f"{name} must be at least 1, got {value}")
    if seed < 0:
        raise L1CertError(f"--seed must be non-negative, got {seed}")
    if max_points < -1:
        raise L1CertError(f"--max must be -1 (all) or a count, got {max_points}")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --- certify -------------------------------------------------------------------------------


def certify_to_tsv(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    split: str = "test",
    root: str | os.PathLike = "data",
    image_size: int = 32,
    imagenet_dir: str | os.PathLike | None = None,
    noise: str | None = None,
    sigma: float | None = None,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch: int = 1000,
    seed: int = 0,
    shard: str | tuple[int, int] = (1, 1),
    skip: int = 1,
    max_points: int = -1,
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Certify this shard's test points into `out` (TSV) and its sidecar; resume if started.

    Dataset, noise and sigma default to the checkpoint's. Returns the TSV path.
    """
    from l1cert import data, models

    check_arguments(sigma, n0, n, alpha, batch, seed, skip, max_points)
    k, total = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
    model_path, out = Path(model_path), Path(out)
    if not model_path.is_file():
        raise L1CertError(f"cannot read checkpoint {model_path}: no such file")
    device = resolve_device(device)
    model, meta = models.load_model(model_path, device)
    dataset = dataset or meta["dataset"]
    smooth_noise = make_noise(noise or meta["noise"], sigma if sigma is not None else meta["sigma"])
    test_set = data.load_split(dataset, split, root, image_size, imagenet_dir)
    indices = select_indices(len(test_set), skip, max_points)
    block = shard_block(indices, k, total)

    settings = {
        "format": SIDECAR_FORMAT,
        "model": str(model_path),
        "model_sha256": file_sha256(model_path),
        "dataset": dataset,
        "split": split,
        "dataset_size": len(test_set),
        "num_classes": int(meta["num_classes"]),
        "noise": smooth_noise.name,
        "sigma": smooth_noise.sigma,
        "scale": smooth_noise.scale,
        "bounds": list(smooth_noise.bounds),
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "batch": batch,
        "seed": seed,
        "skip": skip,
        "max": max_points,
        "shard": k,
        "shards": total,
        "points": len(block),
        "total_points": len(indices),
        "columns": columns(smooth_noise.name),
    }
    done = _prepare_output(out, settings)
    smooth = Smooth(model, settings["num_classes"], smooth_noise)
    todo = [idx for idx in block if idx not in done]
    bar = tqdm(
        total=len(block),
        initial=len(block) - len(todo),
        desc=f"certify {dataset} {smooth_noise.name} sigma={smooth_noise.sigma:g} "
        f"shard {k}/{total} ({n} draws/point)",
        unit="point",
        file=sys.stderr,
        disable=not progress,
    )
    with open(out, "a") as f, bar:
        for idx in todo:
            x, label = test_set[idx]
            start = time.perf_counter()
            cert = smooth.certify(x, n0, n, alpha, batch, point_generator(seed, idx, device))
            elapsed = time.perf_counter() - start
            f.write(format_row(idx, int(label), cert, elapsed, smooth_noise, n0, n, alpha))
            f.flush()
            os.fsync(f.fileno())
            bar.update()
    return out


def format_row(idx, label, cert: Certificate, elapsed, noise: Noise, n0, n, alpha) -> str:
    """One TSV line, its fields in the order of `columns(noise)`."""
    values = {
        "idx": idx, "label": label, "predict": cert.prediction, "radius": _num(cert.radius),
        "correct": int(cert.prediction != ABSTAIN and cert.prediction == label),
        "time": f"{elapsed:.4f}", "noise": noise.name, "sigma": f"{noise.sigma:g}",
        "scale": _num(noise.scale), "n0": n0, "n": n, "alpha": f"{alpha:g}",
        "count": cert.count, "pa_lower": _num(cert.pa_lower),
        "count_b": cert.count_b, "pb_upper": _num(cert.pb_upper),
        **{f"radius_{bound}": _num(radius) for bound, radius in cert.radii.items()},
    }  # fmt: skip
    return "\t".join(str(values[name]) for name in columns(noise.name)) + "\n"


def _num(value: float) -> str:
    return f"{value:.10g}"


def _prepare_output(out: Path, settings: dict) -> set[int]:
    """Start `out` afresh or validate and repair it for resuming; return the idxs done."""
    sidecar = sidecar_path(out)
    if out.exists():
        if not sidecar.exists():
            raise L1CertError(
                f"{out} exists without its sidecar {sidecar}; remove it or use another --out"
            )
        previous = _read_sidecar(sidecar)
        changed = [key for key in settings if key != "model" and previous.get(key) != settings[key]]
        if changed:
            key = changed[0]
            raise L1CertError(
                f"{out} was started with other settings ({key}: {previous.get(key)!r} there, "
                f"{settings[key]!r} now); rerun with its settings or use another --out"
            )
        return _repair_and_read(out, settings)
    atomic_write_text(sidecar, json.dumps(settings, indent=2) + "\n")
    atomic_write_text(out, "\t".join(settings["columns"]) + "\n")
    return set()


def _repair_and_read(out: Path, settings: dict) -> set[int]:
    """Drop a torn last line (a run killed mid-write), check the rows, return their idxs."""
    raw = out.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if len(complete) != len(raw):
        with open(out, "r+b") as f:
            f.truncate(len(complete))
            f.flush()
            os.fsync(f.fileno())
    if not complete:  # killed while the header was written: start the table again
        atomic_write_text(out, "\t".join(settings["columns"]) + "\n")
        return set()
    header, rows = _parse_table(out, complete.decode())
    if header != settings["columns"]:
        raise L1CertError(f"{out}: unexpected header; remove it or use another --out")
    expected = set(
        shard_block(
            select_indices(settings["dataset_size"], settings["skip"], settings["max"]),
            settings["shard"],
            settings["shards"],
        )
    )
    done = set(rows)
    if len(done) != len(rows) or not done <= expected:
        raise L1CertError(f"{out}: rows duplicated or outside this shard; remove it to start again")
    return done


def _parse_table(path: Path, text: str) -> tuple[list[str], dict[int, str]]:
    """Header and {idx: line} of a certify TSV's complete lines."""
    lines = text.splitlines()
    header = lines[0].split("\t")
    rows: dict[int, str] = {}
    duplicates = 0
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header) or not fields[0].isdigit():
            raise L1CertError(f"{path}:{number}: malformed row")
        idx = int(fields[0])
        duplicates += idx in rows
        rows[idx] = line
    if duplicates:
        raise L1CertError(f"{path}: {duplicates} test points appear twice")
    return header, rows


def _read_sidecar(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise L1CertError(f"sidecar {path} not found (each shard TSV needs its .json)") from None
    except (OSError, ValueError) as err:
        raise L1CertError(f"cannot read sidecar {path}: {err}") from None
    if not isinstance(settings, dict) or settings.get("format") != SIDECAR_FORMAT:
        raise L1CertError(f"{path} is not an l1cert certify sidecar")
    return settings


# --- merge ---------------------------------------------------------------------------------


def merge_shards(paths: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """Merge all K shards of one certification into `out`, rows sorted by idx, plus its sidecar.

    Refuses shards that disagree on settings, overlap, or leave test points out.
    """
    paths, out = [Path(p) for p in paths], Path(out)
    if not paths:
        raise L1CertError("merge needs at least one shard TSV")
    sidecars = [_read_sidecar(sidecar_path(p)) for p in paths]
    first = sidecars[0]
    for path, settings in zip(paths[1:], sidecars[1:], strict=True):
        for key in SHARED_SETTINGS:
            if settings.get(key) != first.get(key):
                raise L1CertError(
                    f"{path} and {paths[0]} disagree on {key} "
                    f"({settings.get(key)!r} vs {first.get(key)!r}); they are not one certification"
                )
    _check_shard_numbers(paths, sidecars)

    rows: dict[int, str] = {}
    owner: dict[int, Path] = {}
    for path in paths:
        header, shard_rows = _parse_table(path, _complete_lines(path))
        if header != first["columns"]:
            raise L1CertError(f"{path}: header does not match its sidecar's columns")
        for idx, line in shard_rows.items():
            if idx in rows:
                raise L1CertError(f"shards {owner[idx]} and {path} overlap (both have idx {idx})")
            rows[idx], owner[idx] = line, path
    _check_complete(rows, owner, paths, sidecars)

    with atomic_path(out) as tmp:
        with open(tmp, "w") as f:
            f.write("\t".join(first["columns"]) + "\n")
            f.writelines(rows[idx] + "\n" for idx in sorted(rows))
    batches = {settings["batch"] for settings in sidecars}
    merged = {
        **first,
        "batch": batches.pop() if len(batches) == 1 else None,
        "shard": None,
        "points": len(rows),
        "merged_from": [str(p) for p in paths],
    }
    atomic_write_text(sidecar_path(out), json.dumps(merged, indent=2) + "\n")
    return out


def _complete_lines(path: Path) -> str:
    """A shard's text without a torn last line (that point counts as missing)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise L1CertError(f"cannot read shard {path}: {err.strerror}") from None
    return text[: text.rfind("\n") + 1] or "\n"


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
