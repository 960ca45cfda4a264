"""Certifying one shard of a test split into a TSV and its sidecar (`l1cert certify`).

The settings and identity of the run go into the sidecar; the chosen sampling mode
(`l1cert.sampling`) certifies the points; the resume protocol (`l1cert.resume`) keeps the rows
safe across kills and restarts and publishes them once complete.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from l1cert import certify_format as fmt
from l1cert.config import CertifyConfig
from l1cert.forward import should_compile
from l1cert.noise import Noise, make_noise
from l1cert.points import parse_shard, select_indices, shard_block
from l1cert.provenance import code_digest
from l1cert.resume import already_complete, check_out, partial_path, prepare_partial, publish
from l1cert.sampling import resolve
from l1cert.transaction import exclusive_lock
from l1cert.utils import L1CertError, check_memory, resolve_device, same_file

# Rows reach the kernel as made (a killed job loses none) and the disk at least this often (a
# machine that loses power loses at most this much work); an fsync per row would cost exact
# certification more than its forward passes.
SYNC_SECONDS = 1.0

if TYPE_CHECKING:  # torch only where certification runs
    import torch

    from l1cert.smoothing import Certificate, Smooth


def certify_to_tsv(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike = "data",
    image_size: int = 32,
    imagenet_dir: str | os.PathLike | None = None,
    shard: str | tuple[int, int] = (1, 1),
    shard_list=(),
    radii: list[float] | None = None,
    from_params: bool = False,
    device: str = "auto",
    progress: bool = True,
    max_points: int | None = None,
    **options,
) -> Path:
    """Certify this shard's test points into `out` (TSV) and its sidecar; resume if started.

    `from_params`: the options are a params file's certify section, which serves every noise
    (an exact noise sets aside its sampling settings instead of refusing them).
    `options` are `CertifyConfig`'s fields (dataset, noise, sigma, which default to the
    checkpoint's; n0, n, alpha, batch, seed, skip, max — also as `max_points` —, split,
    sampling, compile, precision). `sampling` names a mode of `l1cert.sampling` ("sequential"
    stops each point once its bucket in `radii` is decided, `n` being the cap). `shard_list`:
    the pipeline's shard numbers, which must be 1..K for `shard` k/K. Returns the TSV path.
    """
    from l1cert import data, models

    if max_points is not None:
        options["max"] = max_points
    config = CertifyConfig(**options)
    config.validate()
    k, total = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
    if shard_list and sorted(shard_list) != list(range(1, total + 1)):
        shown = list(shard_list)
        raise L1CertError(f"--shards {shown} must list 1..{total} for --shard {k}/{total}")
    model_path, out = Path(model_path), Path(out)
    if any(same_file(model_path, target) for target in (out, fmt.sidecar_path(out))):
        raise L1CertError(f"--out {out} is the model it would certify; write elsewhere")
    check_out(out)
    device = resolve_device(device)
    model, meta, noise_state = models.load_model_and_noise(model_path, device)
    dataset = config.dataset or meta["dataset"]
    sigma = config.sigma if config.sigma is not None else meta["sigma"]
    data.check_name(dataset)
    grid = data.INPUT_GRID[dataset]
    smooth_noise = make_noise(config.noise or meta["noise"], sigma, grid, **noise_state)
    mode, draws = resolve(config, smooth_noise, from_params)
    test_set = data.load_split(dataset, config.split, root, image_size, imagenet_dir)
    indices = select_indices(len(test_set), config.skip, config.max)
    block = shard_block(indices, k, total)
    _check_inputs(test_set, meta, dataset, smooth_noise)
    settings = {
        "format": fmt.SIDECAR_FORMAT,
        **_identity(meta, dataset, smooth_noise),
        "model": str(model_path),
        "model_sha256": fmt.file_sha256(model_path),
        "split": config.split,
        "dataset_size": len(test_set),
        "num_classes": int(meta["num_classes"]),
        "scale": smooth_noise.scale,
        **smooth_noise.sidecar(),
        "bounds": list(smooth_noise.bounds),
        **draws,
        "batch": config.batch,
        "seed": config.seed,
        "skip": config.skip,
        "max": config.max,
        "shard": k,
        "shards": total,
        "points": len(block),
        "total_points": len(indices),
        "columns": fmt.columns(smooth_noise.name),
        "code": code_digest(),
        "sampling": mode.name,
    }
    settings |= mode.check({**settings, "radii": radii, "from_params": from_params})
    settings["precision"] = config.precision
    per_point = mode.draws_per_point(settings)
    settings["compile"], reason = should_compile(config.compile, len(block), per_point, device)
    if already_complete(out, settings):
        return out
    check_memory(meta["input_shape"], 2 * min(config.batch, per_point), device)  # buffer, scratch
    partial = partial_path(out)
    with exclusive_lock(partial):
        if already_complete(out, settings):  # finished by the writer that held the lock
            return out
        done = prepare_partial(partial, settings, lambda idx: int(test_set[idx][1]))
        seconds = _certify_block(partial, model, smooth_noise, mode, test_set, block, done,
                                 settings, reason, progress)  # fmt: skip
        publish(partial, out, settings, len(block), seconds, done)
    return out


def _certify_block(partial, model, noise, mode, test_set, block, done, settings, reason, progress):
    """Certify the shard's points not yet in the partial file, appending a row for each;
    return the seconds it took (its rows' own times overlap under sequential sampling)."""
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
    synced = started = time.monotonic()
    with open(partial, "a") as f, bar:
        for idx, cert, elapsed in mode.run(smooth, test_set, todo, settings):
            label = int(test_set[idx][1])
            f.write(fmt.format_row(row_values(idx, label, cert, elapsed, settings), noise.name))
            f.flush()  # in the kernel: the row survives a killed process
            if time.monotonic() - synced > SYNC_SECONDS:  # and, this often, a lost machine
                os.fsync(f.fileno())
                synced = time.monotonic()
            bar.update()
        os.fsync(f.fileno())
    return time.monotonic() - started


def _draws_text(mode, settings: dict) -> str:
    if mode.name == "fixed":
        return f"{settings['n']} draws/point"
    if not mode.estimates:
        return f"{mode.name}: {settings['n']} noise copies/point"
    return f"{mode.name}, at most {mode.draws_per_point(settings)} draws/point"


def _identity(meta: dict, dataset: str, noise: Noise) -> dict:
    """What the report needs to know about the run, from the checkpoint rather than paths
    (with what training the model cost, for the tables' cost columns)."""
    training = str(meta.get("training") or "unknown")
    name = meta.get("name") or f"{noise.name}-{training}-s{noise.sigma}"
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    return {"dataset": dataset, "training": training, "noise": noise.name,
            "sigma": noise.sigma, "model_name": str(name),
            "train_seconds": metrics.get("train_seconds")}  # fmt: skip


def _check_inputs(test_set, meta: dict, dataset: str, noise: Noise) -> None:
    """The checkpoint's input shape is the dataset's (and its noise state's), before any row
    is written."""
    shape = list(test_set[0][0].shape) if len(test_set) else None
    if shape != list(meta["input_shape"]):
        raise L1CertError(
            f"the model takes inputs of shape {meta['input_shape']}, {dataset} has {shape}"
        )
    for name, tensor in noise.state().items():
        if list(tensor.shape) != shape:
            raise L1CertError(
                f"the checkpoint's {noise.name} {name} has shape {list(tensor.shape)}, its "
                f"inputs {shape}: not the template this model was trained with"
            )


def warn_if_slow(smooth: Smooth, x: torch.Tensor, draws: int, settings: dict) -> None:
    """Time one forward batch; warn when a point would take more than a day at that rate."""
    rate = smooth.forward_rate(x, settings["batch"], rows=draws)
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
        "top_class": cert.top_class, "runner_up": cert.runner_up,
        **{f"radius_{bound}": radius for bound, radius in cert.bound_radii.items()},
    }  # fmt: skip
