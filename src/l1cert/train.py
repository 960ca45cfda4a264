"""Training base classifiers for smoothing, under one of the objectives of
`l1cert.objectives` (Type 1, Type 2, consistency, stability).

Resumable: after every epoch `checkpoint-last.pt` holds the model, optimizer and scheduler.
All randomness of epoch e (shuffling, augmentation, noise) is seeded from (seed, e), so a
restarted run needs only the epoch counter to continue exactly where it stopped: on CPU, a
killed and resumed run ends with the same weights as one that was never interrupted.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from l1cert import __version__
from l1cert.config import DataConfig, TrainConfig
from l1cert.data import dataset_info, load_split
from l1cert.fields import config_defaults
from l1cert.models import build_model, check_fits, load_checkpoint, save_model
from l1cert.noise import Noise, noise_class
from l1cert.objectives import OBJECTIVES, train_step
from l1cert.provenance import code_digest
from l1cert.utils import (
    L1CertError,
    atomic_path,
    atomic_write_text,
    check_memory,
    json_text,
    progress,
    resolve_device,
)

CHECKPOINT_FORMAT = "l1cert-train/1"
CHECKPOINT = "checkpoint-last.pt"  # the resume state while a run lasts
OUTPUTS = ("model.pt", "train-log.csv", "metrics.json", CHECKPOINT)
LOG_FIELDS = ("epoch", "lr", "loss", "accuracy", "epsilon", "seconds")


def train(
    config: TrainConfig,
    out: str | os.PathLike,
    data: DataConfig | None = None,
    device: str = "auto",
) -> dict:
    """Train (or resume) into `out`: model.pt, train-log.csv, metrics.json (`data`: where
    the dataset lives).

    `checkpoint-last.pt` holds the state after each epoch while the run lasts, and is removed
    once model.pt is written, so a later run with changed settings starts afresh.
    """
    config.validate()
    data = data or DataConfig()
    workers, settings, dataset = config.workers, config.settings(data), data.dataset
    out, device = Path(out), resolve_device(device)
    if out.exists() and not out.is_dir():
        raise L1CertError(f"--out {out} is a file; training writes a directory")
    finished = _finished(out, settings)
    if finished is not None:
        return finished
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    data = dict(root=data.root, image_size=data.image_size, imagenet_dir=data.imagenet_dir)
    info = dataset_info(dataset, **data)
    noise = noise_class(config.noise).for_model(
        config.sigma, info.grid, info.input_shape, config.seed
    )
    train_set = SeededExamples(load_split(dataset, "train", augment=True, **data))
    test_set = load_split(dataset, "test", **data)
    if len(train_set) < 2:
        raise L1CertError(f"{dataset} has {len(train_set)} training image(s); need 2+")
    copies = OBJECTIVES[config.training].copies(config)
    check_memory(info.input_shape, 4 * copies * config.batch_size, device, "--batch-size")

    torch.manual_seed(config.seed)
    model = build_model(config.arch, info.num_classes, info.input_shape, info.mean, info.std)
    model.to(device)
    check_fits(model, info.input_shape, f"arch {config.arch} on {dataset}")
    optimizer = torch.optim.SGD(
        model.parameters(), config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
    log: list[dict] = []
    _check_writable(out)  # every input checked: the first thing written is this folder
    for name in OUTPUTS:  # half-written files of a killed run (atomic writes' temporaries)
        for stale in out.glob(f".{name}.*.tmp"):
            stale.unlink()
    start = _resume(out / CHECKPOINT, settings, model, optimizer, scheduler, log, device)

    loader_rng = torch.Generator()
    # A last batch of one example would break batch norm in training mode.
    drop_last = len(train_set) % config.batch_size == 1
    loader = DataLoader(
        train_set,
        config.batch_size,
        shuffle=True,
        generator=loader_rng,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=device.type == "cuda",
    )
    noise_rng = torch.Generator(device=device)
    for epoch in range(start, config.epochs):
        seeds = _epoch_seeds(config.seed, epoch)
        train_set.seed = seeds[0]
        loader_rng.manual_seed(seeds[1])
        noise_rng.manual_seed(seeds[2])
        row = _train_epoch(model, loader, optimizer, noise, noise_rng, config, epoch, device)
        scheduler.step()
        log.append(row)
        _save_checkpoint(out / CHECKPOINT, settings, model, optimizer, scheduler, log)
        _write_log(out, log)
        tqdm.write(
            f"epoch {epoch + 1}/{config.epochs}: loss {row['loss']:.4f} "
            f"accuracy {row['accuracy']:.4f} ({row['seconds']:.1f} s)",
            file=sys.stderr,
        )

    _write_log(out, log)  # a run killed as it renamed the last epoch's log left it short
    metrics = evaluate(model, test_set, noise, config.seed, device, workers)
    metrics["train_seconds"] = round(sum(row["seconds"] for row in log), 3)
    meta = {
        **settings,
        **info._asdict(),
        "scale": noise.scale,
        "metrics": metrics,
        "log": log,  # so train-log.csv can be restored once the resume checkpoint is gone
        "l1cert_version": __version__,
        "code": code_digest("train"),  # the code that trained it: benchmarks quote current models
    }
    save_model(out / "model.pt", model, meta, noise.state())
    atomic_write_text(out / "metrics.json", json_text(metrics))
    (out / CHECKPOINT).unlink(missing_ok=True)
    return metrics


def _finished(out: Path, settings: dict) -> dict | None:
    """The metrics of a finished run with these settings in `out` (a rerun has nothing to do);
    a finished run with other settings is refused rather than overwritten."""
    model_file = out / "model.pt"
    if not model_file.exists() or (out / CHECKPOINT).exists():
        return None
    ckpt = load_checkpoint(model_file)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("metrics"), dict):
        raise L1CertError(f"{model_file} is not a finished l1cert model; remove it to start over")
    changed = _changed(meta, settings)
    if changed:
        raise L1CertError(
            f"{model_file} was trained with other settings ({', '.join(changed)}); "
            "use another --out or remove it to start over"
        )
    log, fields = meta.get("log"), set(LOG_FIELDS)
    if isinstance(log, list) and all(isinstance(r, dict) and r.keys() <= fields for r in log):
        _write_log(out, log)  # models saved before they kept their log: left as they are
    return meta["metrics"]


def _changed(theirs: dict, ours: dict) -> list[str]:
    """The settings of `ours` that a run made with `theirs` differs on; a setting added after
    that run was made counts as its default."""
    defaults = config_defaults(TrainConfig)
    return sorted(k for k in ours if theirs.get(k, defaults.get(k)) != ours[k])


def _check_writable(out: Path) -> None:
    """Refuse an --out that training could not write its first checkpoint into, before any
    epoch is spent: make it, and a file in it (permission bits do not tell: root, read-only
    and special file systems)."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        raise L1CertError(f"--out {out}: cannot write there ({err.strerror or err})") from None


class SeededExamples(Dataset):
    """A training set whose random augmentation (crops, flips: drawn from torch's global
    generator) is seeded per example by (the epoch's `seed`, its index): the same in whichever
    process loads it, so the number of data loader workers changes no batch."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.seed = dataset, 0
        self.targets = getattr(dataset, "targets", None)
        # a dataset that draws nothing (digits' tensors) needs no seed: seeding per example
        # costs as much as a small model's training step
        self.augments = getattr(dataset, "augments", True)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        if self.augments:
            seed = np.random.SeedSequence([self.seed, i]).generate_state(1, np.uint64)[0]
            torch.random.default_generator.manual_seed(int(seed) & (2**63 - 1))
        return self.dataset[i]


def _epoch_seeds(seed: int, epoch: int) -> list[int]:
    return [int(s) for s in np.random.SeedSequence([seed, epoch]).generate_state(3, np.uint64)]


def _train_epoch(model, loader, optimizer, noise, noise_rng, config, epoch, device) -> dict:
    model.train()
    settings = config.objective()
    epsilon = settings.epsilon_at(epoch) if config.training == "type2" else 0.0
    lr = optimizer.param_groups[0]["lr"]
    total_loss = correct = count = 0
    started = time.perf_counter()
    bar = progress(
        loader,
        desc=f"epoch {epoch + 1}/{config.epochs} {config.training}",
        leave=False,
        unit="batch",
    )
    for x, y in bar:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits, y = train_step(model, optimizer, x, y, noise, noise_rng, config, epoch)
        if not torch.isfinite(loss):
            raise L1CertError(
                f"training diverged: loss {loss.item()} in epoch {epoch + 1} (lower --lr?); "
                "no model was written"
            )
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        count += len(y)
        bar.set_postfix(loss=f"{total_loss / count:.3f}", refresh=False)
    return {
        "epoch": epoch + 1,
        "lr": lr,
        "loss": total_loss / count,
        "accuracy": correct / count,
        "epsilon": epsilon,
        "seconds": time.perf_counter() - started,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset, noise: Noise, seed: int = 0, device="cpu", workers=0
) -> dict:
    """Clean accuracy and accuracy under one seeded noise draw per test image."""
    model.eval()
    rng = torch.Generator(device=device).manual_seed(seed)
    clean = noisy = count = 0
    for x, y in DataLoader(dataset, batch_size=256, num_workers=workers):
        x, y = x.to(device), y.to(device)
        clean += (model(x).argmax(1) == y).sum().item()
        x = noise.augment(x, rng)
        noisy += (model(x).argmax(1) == y).sum().item()
        count += len(y)
    return {
        "clean_accuracy": clean / count,
        "noise_accuracy": noisy / count,
        "test_images": count,
        "noise": noise.name,
        "sigma": noise.sigma,
    }


# --- resume state --------------------------------------------------------------------------


def _save_checkpoint(path, settings, model, optimizer, scheduler, log) -> None:
    state = {
        "format": CHECKPOINT_FORMAT,
        "settings": settings,
        "epoch": len(log),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "log": log,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, settings, model, optimizer, scheduler, log, device) -> int:
    """Load the last epoch's state if `path` exists; return the number of epochs done."""
    if not path.exists():
        return 0
    state = load_checkpoint(path, map_location=device)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise L1CertError(f"{path} is not an l1cert training checkpoint; remove it to start over")
    changed = _changed(state["settings"], settings)
    if changed:
        raise L1CertError(
            f"{path} was made with other settings ({', '.join(changed)}); "
            "use another --out or remove it to start over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.extend(state["log"])
    if state["epoch"] < settings["epochs"]:
        print(f"resuming from {path} after epoch {state['epoch']}", file=sys.stderr)
    return state["epoch"]


def _write_log(out: Path, log: list[dict]) -> None:
    """train-log.csv from the log of the epochs done, rewritten only if it differs (a run
    killed between its checkpoint and its log's rename left the log an epoch short)."""
    path, text = out / "train-log.csv", _csv(log)
    try:
        same = path.read_text() == text
    except (OSError, UnicodeDecodeError):
        same = False
    if not same:
        atomic_write_text(path, text)


def _csv(log: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, LOG_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in log:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()
