"""Sharded, resumable certification of a test split, and the merge of its shards.

`certify_to_tsv` writes one TSV row per test point into a partial file (`partial/` beside
`--out`), flushed and fsync'd as it is made, so a run killed at any moment resumes where it
stopped; when every point is done it seals the sidecar (row count, digest) and moves both onto
`--out`. Pipeline engines delete a job's declared outputs before running it, which is why the
rows in progress live elsewhere. One writer at a time: an exclusive lock beside the partial
file. The sidecar records the settings and the code that decides the rows; a restart or a
merge under other settings or other code is refused. The noise for test point `idx` comes from
a generator seeded by (seed, idx), so merged shards equal a single run.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from l1cert import certify_format as fmt
from l1cert import sequential
from l1cert.forward import check_compile_mode, check_precision, should_compile
from l1cert.noise import Noise, make_noise
from l1cert.provenance import code_digest
from l1cert.utils import (
    L1CertError,
    atomic_path,
    atomic_write_text,
    check_memory,
    resolve_device,
)

if TYPE_CHECKING:  # torch only where certification runs: `l1cert merge` starts quickly
    import torch

    from l1cert.smoothing import Certificate, Smooth

# Settings every shard of one certification shares; merge refuses shards that differ on them.
SHARED_SETTINGS = (
    "model_sha256", "model_name", "training", "dataset", "split", "dataset_size",
    "num_classes", "noise", "sigma", "scale", "n0", "n", "alpha", "seed", "skip", "max",
    "shards", "columns", "code", "sampling", "radii", "looks", "compile", "precision",
)  # fmt: skip
SAMPLINGS = ("fixed", "sequential")


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
    import torch

    state = np.random.SeedSequence([seed, idx]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))


def check_sampling(sampling: str, radii, n: int) -> list[float] | None:
    """The radius grid a sequential run decides (None for fixed sampling)."""
    if sampling not in SAMPLINGS:
        raise L1CertError(f"unknown sampling {sampling!r} (choose from fixed, sequential)")
    if sampling == "fixed":
        return None
    if radii is None or len(radii) == 0:
        raise L1CertError("--sampling sequential needs --radii R1,R2,... (the table's radii)")
    radii = [float(r) for r in radii]
    if any(not (math.isfinite(r) and r >= 0) for r in radii) or radii != sorted(set(radii)):
        raise L1CertError(f"--radii must be increasing non-negative numbers, got {radii}")
    if n < sequential.FIRST_LOOK:
        raise L1CertError(
            f"--n {n} (the cap of sequential sampling) is below its first round of "
            f"{sequential.FIRST_LOOK} draws"
        )
    return radii


def check_arguments(sigma, n0, n, alpha, batch, seed, skip, max_points) -> None:
    if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
        raise L1CertError(f"--sigma must be a positive number, got {sigma}")
    if not 0 < alpha < 1:
        raise L1CertError(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    for name, value in (("--n0", n0), ("--n", n), ("--batch", batch), ("--skip", skip)):
        if value < 1:
            raise L1CertError(f"{name} must be at least 1, got {value}")
    if seed < 0:
        raise L1CertError(f"--seed must be non-negative, got {seed}")
    if max_points < -1 or max_points == 0:
        raise L1CertError(f"--max must be -1 (all) or a positive count, got {max_points}")


def partial_path(out: str | os.PathLike) -> Path:
    """Where the rows of `out` grow until it is complete: partial/<name> beside it."""
    out = Path(out)
    return out.parent / "partial" / out.name


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
    sampling: str = "fixed",
    radii: list[float] | None = None,
    compile: str = "off",
    precision: str = "fp32",
    device: str = "auto",
    progress: bool = True,
) -> Path:
    """Certify this shard's test points into `out` (TSV) and its sidecar; resume if started.

    Dataset, noise and sigma default to the checkpoint's. `sampling="sequential"` stops each
    point once its bucket in `radii` is decided (`n` is then the cap; see
    `Smooth.certify_sequential`). `compile` (auto, on, off) and `precision` (fp32, bf16)
    choose how the base classifier runs (`l1cert.forward`). Returns the TSV path.
    """
    from tqdm import tqdm

    from l1cert import data, models
    from l1cert.smoothing import Smooth

    check_arguments(sigma, n0, n, alpha, batch, seed, skip, max_points)
    grid = check_sampling(sampling, radii, n)
    check_compile_mode(compile)
    check_precision(precision)
    k, total = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
    model_path, out = Path(model_path), Path(out)
    _check_out(out)
    device = resolve_device(device)
    model, meta = models.load_model(model_path, device)
    dataset = dataset or meta["dataset"]
    smooth_noise = make_noise(noise or meta["noise"], sigma if sigma is not None else meta["sigma"])
    test_set = data.load_split(dataset, split, root, image_size, imagenet_dir)
    indices = select_indices(len(test_set), skip, max_points)
    block = shard_block(indices, k, total)
    _check_inputs(test_set, meta, dataset)
    settings = {
        "format": fmt.SIDECAR_FORMAT,
        **_identity(meta, dataset, smooth_noise),
        "model": str(model_path),
        "model_sha256": fmt.file_sha256(model_path),
        "split": split,
        "dataset_size": len(test_set),
        "num_classes": int(meta["num_classes"]),
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
        "columns": fmt.columns(smooth_noise.name),
        "code": code_digest(__name__),
        "sampling": sampling,
        "radii": grid,
        "looks": sequential.looks(n) if grid else None,
        "precision": precision,
    }
    settings["compile"], reason = should_compile(compile, len(block), n0 + n, device)
    if _already_complete(out, settings):
        return out
    check_memory(meta["input_shape"], 2 * min(batch, max(n, n0)), device)  # buffer, scratch
    partial = partial_path(out)
    with exclusive_lock(partial):
        if _already_complete(out, settings):  # finished by the writer that held the lock
            return out
        done = _prepare_partial(partial, settings)
        smooth = Smooth(model, settings["num_classes"], smooth_noise,
                        compile=settings["compile"], precision=precision)  # fmt: skip
        todo = [idx for idx in block if idx not in done]
        if progress:
            print(f"l1cert certify: compile {'on' if settings['compile'] else 'off'} "
                  f"({reason}), precision {precision}", file=sys.stderr)  # fmt: skip
        if todo:
            warn_if_slow(smooth, test_set[todo[0]][0], n0 + n, batch)
        draws = f"{n} draws/point" if grid is None else f"sequential, at most {n} draws/point"
        bar = tqdm(
            total=len(block),
            initial=len(block) - len(todo),
            desc=f"certify {dataset} {smooth_noise.name} sigma={smooth_noise.sigma:g} "
            f"shard {k}/{total} ({draws})",
            unit="point",
            file=sys.stderr,
            disable=not progress,
        )
        with open(partial, "a") as f, bar:
            for idx, cert, elapsed in _certify_points(smooth, test_set, todo, settings, device):
                label = int(test_set[idx][1])
                f.write(fmt.format_row(row_values(idx, label, cert, elapsed, settings),
                                       smooth_noise.name))  # fmt: skip
                f.flush()
                os.fsync(f.fileno())
                bar.update()
        _publish(partial, out, settings, len(block))
    return out


def _certify_points(smooth: Smooth, test_set, todo: list[int], settings: dict, device):
    """(idx, certificate, seconds) for each point, in the order they finish."""
    n0, n, alpha, batch = (settings[k] for k in ("n0", "n", "alpha", "batch"))
    if settings["sampling"] == "fixed":
        for idx in todo:
            start = time.perf_counter()
            generator = point_generator(settings["seed"], idx, device)
            cert = smooth.certify(test_set[idx][0], n0, n, alpha, batch, generator)
            yield idx, cert, time.perf_counter() - start
        return
    started = {}

    def points():  # a point's time runs from when it joins the batches to when it stops
        for idx in todo:
            started[idx] = time.perf_counter()
            yield idx, test_set[idx][0], point_generator(settings["seed"], idx, device)

    for idx, cert in smooth.certify_sequential(points(), n0, n, alpha, batch, settings["radii"]):
        yield idx, cert, time.perf_counter() - started.pop(idx)


def _identity(meta: dict, dataset: str, noise: Noise) -> dict:
    """What the report needs to know about the run, from the checkpoint rather than paths."""
    training = str(meta.get("training") or "unknown")
    name = meta.get("name") or f"{noise.name}-{training}-s{noise.sigma}"
    return {"dataset": dataset, "training": training, "noise": noise.name,
            "sigma": noise.sigma, "model_name": str(name)}  # fmt: skip


def _check_inputs(test_set, meta: dict, dataset: str) -> None:
    """The checkpoint's input shape is the dataset's, before any row is written."""
    shape = list(test_set[0][0].shape) if len(test_set) else None
    if shape != list(meta["input_shape"]):
        raise L1CertError(
            f"the model takes inputs of shape {meta['input_shape']}, {dataset} has {shape}"
        )


def warn_if_slow(smooth: Smooth, x: torch.Tensor, draws: int, batch: int) -> None:
    """Time one batch; warn when a point would take more than a day at that rate."""
    size = min(batch, draws)
    start = time.perf_counter()
    smooth.certify(x, 1, size, 0.5, batch)
    rate = (size + 1) / max(time.perf_counter() - start, 1e-9)
    days = draws / rate / 86400
    if days > 1:
        print(
            f"l1cert: warning: {draws} draws per point at about {rate:.0f} draws/s take "
            f"{days:.0f} days per point",
            file=sys.stderr,
            flush=True,
        )


def row_values(idx: int, label: int, cert: Certificate, elapsed: float, settings: dict) -> dict:
    """The fields of one row (`certify_format.format_row` orders and prints them)."""
    return {
        "idx": idx, "label": label, "predict": cert.prediction, "radius": cert.radius,
        "correct": int(cert.prediction != fmt.ABSTAIN and cert.prediction == label),
        "time": f"{elapsed:.4f}", "noise": settings["noise"], "sigma": f"{settings['sigma']:g}",
        "scale": settings["scale"], "n0": settings["n0"], "n": cert.n,
        "alpha": f"{settings['alpha']:g}", "count": cert.count, "pa_lower": cert.pa_lower,
        "count_b": cert.count_b, "pb_upper": cert.pb_upper, "top_class": cert.top_class,
        **{f"radius_{bound}": radius for bound, radius in cert.radii.items()},
    }  # fmt: skip


def _check_out(out: Path) -> None:
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


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an flock on `path`.lock for the block; a second writer fails at once.

    flock is advisory and local to one machine on most network file systems (NFS with local
    locks): it keeps two jobs on the same node apart, and SLURM requeues use the same node or
    start after the first job ended. The lock file stays (removing it would race).
    """
    lock = path.with_name(path.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise L1CertError(f"{path} is being written by {holder} (lock {lock})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the lock


def _differences(previous: dict, settings: dict, keys) -> list[str]:
    return [key for key in keys if previous.get(key) != settings.get(key)]


def _refuse_changed(path: Path, previous: dict, settings: dict, keys) -> None:
    changed = _differences(previous, settings, keys)
    if not changed:
        return
    key = changed[0]
    if key == "code":
        raise L1CertError(
            f"{path} was made by other l1cert code (version {previous['code'].get('version')}, "
            f"digest {str(previous['code'].get('sha256'))[:12]}); its rows cannot be mixed "
            f"with this code's: remove {path} and its .json to start afresh"
        )
    raise L1CertError(
        f"{path} was started with other settings ({key}: {previous.get(key)!r} there, "
        f"{settings[key]!r} now); rerun with its settings or use another --out"
    )


def _run_keys(settings: dict) -> list[str]:
    """The settings a restart must match: all but where the model file lies."""
    return [key for key in settings if key != "model"]


def _already_complete(out: Path, settings: dict) -> bool:
    """True if `out` is this run's finished table (a rerun then changes nothing)."""
    if not out.exists():
        return False
    if not fmt.sidecar_path(out).exists():
        raise L1CertError(f"{out} exists without its sidecar; remove it or use another --out")
    previous = fmt.read_sidecar(out)
    _refuse_changed(out, previous, settings, _run_keys(settings))
    fmt.check_sealed(out, previous, fmt.read_rows(out, settings["num_classes"]))
    return True


def _prepare_partial(partial: Path, settings: dict) -> set[int]:
    """Start the partial file afresh or validate and repair it for resuming; return idxs done."""
    if not partial.exists() or not fmt.sidecar_path(partial).exists():
        fmt.write_sidecar(partial, settings)
        _write_header(partial, settings)
        return set()
    _refuse_changed(partial, fmt.read_sidecar(partial), settings, _run_keys(settings))
    raw = partial.read_bytes()
    complete = raw[: raw.rfind(b"\n") + 1]
    if not complete:  # killed while the header was written
        _write_header(partial, settings)
        return set()
    table = fmt.read_rows(partial, settings["num_classes"], torn="drop")
    if table.header != settings["columns"]:
        raise L1CertError(f"{partial}: unexpected header; remove it to start afresh")
    block = shard_block(
        select_indices(settings["dataset_size"], settings["skip"], settings["max"]),
        settings["shard"],
        settings["shards"],
    )
    if not set(table.rows) <= set(block):
        raise L1CertError(f"{partial}: rows outside this shard; remove it to start afresh")
    if len(complete) != len(raw):  # a torn last line: drop it, only after every check passed
        with open(partial, "r+b") as f:
            f.truncate(len(complete))
            os.fsync(f.fileno())
    return set(table.rows)


def _write_header(path: Path, settings: dict) -> None:
    atomic_write_text(path, "\t".join(settings["columns"]) + "\n")


def _publish(partial: Path, out: Path, settings: dict, rows: int) -> None:
    """Sort the rows by idx, seal the sidecar with the finished table's digest, then move the
    pair onto `out`."""
    table = fmt.read_rows(partial, settings["num_classes"])
    with atomic_path(partial) as tmp:
        tmp.write_text(
            "\t".join(table.header)
            + "\n"
            + "".join(line + "\n" for _, line in sorted(table.lines().items()))
        )
    fmt.write_sidecar(partial, fmt.seal(partial, settings, rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    os.replace(fmt.sidecar_path(partial), fmt.sidecar_path(out))
    os.replace(partial, out)


# --- merge ---------------------------------------------------------------------------------


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
        changed = _differences(settings, first, SHARED_SETTINGS)
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
