"""Certifying one shard of a test split into a TSV and its sidecar (`l1cert certify`).

The settings and identity of the run go into the sidecar; the chosen sampling mode
(`l1cert.sampling`) certifies the points; the resume protocol (`l1cert.resume`) keeps the rows
safe across kills and restarts and publishes them once complete.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from l1cert import certify_format as fmt
from l1cert.forward import check_compile_mode, check_precision, should_compile
from l1cert.noise import Noise, make_noise
from l1cert.points import parse_shard, select_indices, shard_block
from l1cert.provenance import code_digest
from l1cert.resume import (
    already_complete,
    check_out,
    exclusive_lock,
    partial_path,
    prepare_partial,
    publish,
)
from l1cert.sampling import sampling_mode
from l1cert.utils import L1CertError, check_memory, resolve_device

if TYPE_CHECKING:  # torch only where certification runs
    import torch

    from l1cert.smoothing import Certificate, Smooth


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

    Dataset, noise and sigma default to the checkpoint's. `sampling` names a mode of
    `l1cert.sampling` ("sequential" stops each point once its bucket in `radii` is decided, `n`
    being the cap). `compile` (auto, on, off) and `precision` (fp32, bf16) choose how the base
    classifier runs (`l1cert.forward`). Returns the TSV path.
    """
    from l1cert import data, models

    check_arguments(sigma, n0, n, alpha, batch, seed, skip, max_points)
    check_compile_mode(compile)
    check_precision(precision)
    k, total = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
    model_path, out = Path(model_path), Path(out)
    check_out(out)
    device = resolve_device(device)
    model, meta = models.load_model(model_path, device)
    dataset = dataset or meta["dataset"]
    smooth_noise = make_noise(noise or meta["noise"], sigma if sigma is not None else meta["sigma"])
    mode = sampling_mode(sampling, smooth_noise)
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
        "code": code_digest(),
        "sampling": sampling,
    }
    settings |= mode.check({**settings, "radii": radii})
    settings["precision"] = precision
    draws = mode.draws_per_point(settings)
    settings["compile"], reason = should_compile(compile, len(block), draws, device)
    if already_complete(out, settings):
        return out
    check_memory(meta["input_shape"], 2 * min(batch, draws), device)  # buffer, scratch
    partial = partial_path(out)
    with exclusive_lock(partial):
        if already_complete(out, settings):  # finished by the writer that held the lock
            return out
        done = prepare_partial(partial, settings)
        _certify_block(partial, model, smooth_noise, mode, test_set, block, done, settings,
                       reason, progress)  # fmt: skip
        publish(partial, out, settings, len(block))
    return out


def _certify_block(partial, model, noise, mode, test_set, block, done, settings, reason, progress):
    """Certify the shard's points not yet in the partial file, appending a row for each."""
    from tqdm import tqdm

    from l1cert.smoothing import Smooth

    smooth = Smooth(model, settings["num_classes"], noise,
                    compile=settings["compile"], precision=settings["precision"])  # fmt: skip
    todo = [idx for idx in block if idx not in done]
    if progress:
        print(f"l1cert certify: compile {'on' if settings['compile'] else 'off'} "
              f"({reason}), precision {settings['precision']}", file=sys.stderr)  # fmt: skip
    if todo:
        warn_if_slow(smooth, test_set[todo[0]][0], mode.draws_per_point(settings), settings)
    bar = tqdm(
        total=len(block),
        initial=len(block) - len(todo),
        desc=f"certify {settings['dataset']} {noise.name} sigma={noise.sigma:g} "
        f"shard {settings['shard']}/{settings['shards']} ({_draws_text(mode, settings)})",
        unit="point",
        file=sys.stderr,
        disable=not progress,
    )
    with open(partial, "a") as f, bar:
        for idx, cert, elapsed in mode.run(smooth, test_set, todo, settings):
            label = int(test_set[idx][1])
            f.write(fmt.format_row(row_values(idx, label, cert, elapsed, settings), noise.name))
            f.flush()
            os.fsync(f.fileno())
            bar.update()


def _draws_text(mode, settings: dict) -> str:
    if mode.name == "fixed":
        return f"{settings['n']} draws/point"
    return f"{mode.name}, at most {mode.draws_per_point(settings)} draws/point"


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


def warn_if_slow(smooth: Smooth, x: torch.Tensor, draws: int, settings: dict) -> None:
    """Time one forward batch; warn when a point would take more than a day at that rate."""
    rate = smooth.forward_rate(x, min(settings["batch"], draws))
    days = draws / rate / 86400
    if days > 1:
        print(
            f"l1cert: warning: {draws} draws per point at about {rate:.0f} draws/s take "
            f"{days:.0f} days per point",
            file=sys.stderr,
            flush=True,
        )


def row_values(idx: int, label: int, cert: Certificate, elapsed: float, settings: dict) -> dict:
    """The fields of one row (`certify_format.format_row` orders and prints them); an exact
    certificate has no selection draws and no failure probability: n0 and alpha 0."""
    return {
        "idx": idx, "label": label, "predict": cert.prediction, "radius": cert.radius,
        "correct": int(cert.prediction != fmt.ABSTAIN and cert.prediction == label),
        "time": f"{elapsed:.4f}", "noise": settings["noise"], "sigma": f"{settings['sigma']:g}",
        "scale": settings["scale"], "n0": cert.n0, "n": cert.n,
        "alpha": "0" if cert.exact else f"{cert.alpha:g}", "count": cert.count,
        "pa_lower": cert.pa_lower, "count_b": cert.count_b, "pb_upper": cert.pb_upper,
        "top_class": cert.top_class,
        **{f"radius_{bound}": radius for bound, radius in cert.bound_radii.items()},
    }  # fmt: skip
