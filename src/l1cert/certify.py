"""Certifying one shard of a test split into a TSV and its sidecar (`l1cert certify`).

The settings that decide the rows and the identity of the run go into the sidecar's `result`
(`l1cert.certify_format` describes its sections); the chosen sampling mode
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
from l1cert.config import CertifyConfig, DataConfig
from l1cert.forward import should_compile
from l1cert.noise import Noise, noise_of_model
from l1cert.points import parse_shard, select_indices, shard_block
from l1cert.provenance import code_digest
from l1cert.resume import (
    already_complete,
    check_out,
    journal,
    partial_path,
    prepare_partial,
    publish,
    recover,
)
from l1cert.sampling import resolve
from l1cert.transaction import exclusive_lock
from l1cert.utils import L1CertError, check_memory, resolve_device, same_file, writing

# Rows reach the kernel as made (a killed job loses none) and the disk at least this often (a
# machine that loses power loses at most this much work); an fsync per row would cost exact
# certification more than its forward passes.
SYNC_SECONDS = 1.0

if TYPE_CHECKING:  # torch only where certification runs
    import torch

    from l1cert.certificate import Certificate
    from l1cert.smoothing import Smooth


def certify_to_tsv(
    model_path: str | os.PathLike,
    out: str | os.PathLike,
    config: CertifyConfig | None = None,
    *,
    data: DataConfig | None = None,
    shard: str | tuple[int, int] = (1, 1),
    device: str = "auto",
    progress: bool = True,
    **options,
) -> Path:
    """Certify this shard's test points into `out` (TSV) and its sidecar; resume if started.

    `config`, or `options` as its fields (noise, sigma, which default to the checkpoint's;
    split, n0, n, alpha, batch, seed, skip, max, sampling, radii, compile,
    precision, threads): what to certify and how; `data`: the dataset (default: the
    checkpoint's) and where it lives. `sampling` names a mode of
    `l1cert.sampling` ("sequential" stops each point once its bucket among `radii` is decided,
    `n` being the cap). Returns the TSV path.
    """
    from l1cert import models

    if isinstance(options.get("radii"), list | tuple):  # the config holds them as text
        options["radii"] = ",".join(str(r) for r in options["radii"])
    config = config or CertifyConfig(**options)
    config.validate()
    data = data or DataConfig()
    k, total = parse_shard(shard if isinstance(shard, str) else f"{shard[0]}/{shard[1]}")
    model_path, out = Path(model_path), Path(out)
    if any(same_file(model_path, target) for target in (out, fmt.sidecar_path(out))):
        raise L1CertError(f"--out {out} is the model it would certify; write elsewhere")
    check_out(out)
    device = resolve_device(device)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)
    model, meta, noise_state = models.load_model_and_noise(model_path, device)
    side, noise, mode, test_set, block = _sidecar(config, data, meta, noise_state, model_path,
                                                  device, k, total)  # fmt: skip
    if not journal(out).exists() and already_complete(out, side):  # nothing to do, no lock
        return out
    check_memory(meta["input_shape"], noise.buffers * min(config.batch, side["result"]["n"]),
                 device)  # fmt: skip
    partial = partial_path(out)
    with exclusive_lock(partial):
        recover(out)  # a run killed while publishing: its pair is finished, not recomputed
        if already_complete(out, side):
            return out
        done = prepare_partial(partial, side, lambda idx: test_set[idx])
        seconds = _certify_block(partial, model, noise, mode, test_set, block, done, side,
                                 progress)  # fmt: skip
        publish(partial, out, side, len(block), seconds, done)
    return out


def _sidecar(config, data, meta, noise_state, model_path, device, k, total):
    """The sidecar of this shard: its `result` (every setting that decides its rows: resume and
    merge compare it whole), its `part` of the run, and how it `run`s (compared by nothing);
    with the noise, the sampling mode, the test split and the shard's points."""
    from l1cert import data as datasets

    dataset = data.dataset or meta["dataset"]
    datasets.check_name(dataset)
    sigma = config.sigma if config.sigma is not None else meta["sigma"]
    noise = noise_of_model(config.noise or meta["noise"], sigma, datasets.INPUT_GRID[dataset],
                           noise_state, meta["noise"])  # fmt: skip
    mode, draws = resolve(config, noise)
    test_set = datasets.load_split(dataset, config.split, data.root, data.image_size,
                                   data.imagenet_dir)  # fmt: skip
    _check_inputs(test_set, meta, dataset, noise)
    indices = select_indices(len(test_set), config.skip, config.max)
    block = shard_block(indices, k, total)
    result = {
        **config.deciding(dataset=dataset, takes=mode.takes),  # noise, sigma: resolved below
        **_identity(meta, dataset, noise),
        "model_sha256": fmt.file_sha256(model_path),
        "dataset_size": len(test_set),
        "num_classes": int(meta["num_classes"]),
        "input_shape": list(meta["input_shape"]),
        "scale": noise.scale,
        **noise.sidecar(),
        "bounds": list(noise.bounds),
        "columns": fmt.columns(noise.name),
        **draws,
        "device": device.type,  # CPU and CUDA generators draw other noise from one seed
        "code": code_digest(),
    }
    result |= mode.check(result)
    compiled, reason = should_compile(config.compile, len(block), mode.draws_per_point(result),
                                      device)  # fmt: skip
    result["compile"] = compiled
    side = {
        "format": fmt.SIDECAR_FORMAT,
        "result": result,
        "part": {"shard": k, "shards": total, "points": len(block), "total_points": len(indices)},
        "run": {
            "model": str(model_path),
            "batch": config.batch,
            "threads": config.threads,
            "compile": reason,
        },  # fmt: skip
    }
    return side, noise, mode, test_set, block


def _certify_block(partial, model, noise, mode, test_set, block, done, side, show_progress):
    """Certify the shard's points not yet in the partial file, appending a row for each;
    return the seconds it took (its rows' own times overlap under sequential sampling)."""
    from l1cert.smoothing import Smooth
    from l1cert.utils import progress

    result, part = side["result"], side["part"]
    settings = {**result, "batch": side["run"]["batch"]}
    smooth = Smooth(model, result["num_classes"], noise,
                    compile=result["compile"], precision=result["precision"])  # fmt: skip
    todo = [idx for idx in block if idx not in done]
    if show_progress:
        print(f"l1cert certify: compile {'on' if result['compile'] else 'off'} "
              f"({side['run']['compile']}), precision {result['precision']}",
              file=sys.stderr)  # fmt: skip
    if todo:
        warn_if_slow(smooth, test_set[todo[0]][0], mode.draws_per_point(result), settings)
    bar = progress(
        total=len(block),
        initial=len(block) - len(todo),
        desc=f"certify {result['dataset']} {noise.name} sigma={noise.sigma:g} "
        f"shard {part['shard']}/{part['shards']} ({mode.describe(result)})",
        unit="point",
        disable=not show_progress,
    )
    synced = started = time.monotonic()
    with writing(partial), open(partial, "a") as f, bar:
        for idx, cert, elapsed in mode.run(smooth, test_set, todo, settings):
            label = int(test_set[idx][1])
            f.write(fmt.format_row(row_values(idx, label, cert, elapsed, result), noise.name))
            f.flush()  # in the kernel: the row survives a killed process
            if time.monotonic() - synced > SYNC_SECONDS:  # and, this often, a lost machine
                os.fsync(f.fileno())
                synced = time.monotonic()
            bar.update()
        os.fsync(f.fileno())
    return time.monotonic() - started


def _identity(meta: dict, dataset: str, noise: Noise) -> dict:
    """What the report needs to know about the run, from the checkpoint rather than paths
    (with what training the model cost, for the tables' cost columns)."""
    from l1cert.names import check_plain_name

    # they name the report's files and rows: refused here rather than by the report
    training = check_plain_name("the checkpoint's training", meta.get("training") or "unknown")
    name = meta.get("name") or f"{noise.name}-{training}-s{noise.sigma}"
    check_plain_name("the checkpoint's name", name)
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    seconds = metrics.get("train_seconds")
    if fmt.SIDECAR_CHECKS["result"]["train_seconds"](seconds):  # not a time: not recorded
        seconds = None
    return {"dataset": dataset, "training": training, "noise": noise.name,
            "sigma": noise.sigma, "model_name": str(name), "train_seconds": seconds}  # fmt: skip


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
