"""Throughput of `Smooth.certify` against its limit and against a Cohen-style baseline.

A CIFAR-shaped (3x32x32) ResNet-20 on the CPU. Three ways to push the same number of inputs
through the same model at the same batch size:

- limit:    the bare forward pass of the model (inference mode, channels-last) on a fixed batch;
- ours:     `Smooth.certify` (n0 + n noise draws: sampling, counting, confidence bound, radii);
- baseline: the straightforward loop of Cohen et al.'s core.py: NCHW fp32, a fresh noisy batch
            per step (x.repeat + a new noise tensor), predictions copied to the host and counted
            in Python.

Prints draws per second for each, ours/limit (target >= 0.9) and ours/baseline.

    python benchmarks/certify_throughput.py [--n 2000 --n0 100 --batch 500 --threads 2]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from l1cert.data import CIFAR10_MEAN, CIFAR10_STD
from l1cert.models import build_model
from l1cert.noise import make_noise
from l1cert.smoothing import Smooth


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Fastest of `repeats` rounds; the methods take turns so a busy machine slows all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def bare_forward(model, x, draws: int, batch: int):
    inputs = x.expand(batch, *x.shape).contiguous(memory_format=torch.channels_last)

    def run():
        with torch.inference_mode():
            remaining = draws
            while remaining > 0:
                size = min(batch, remaining)
                model(inputs[:size])
                remaining -= size

    return run


def cohen_style(model, x, draws: int, batch: int, num_classes: int, scale: float, seed: int):
    """Cohen et al.'s _sample_noise loop, with Laplace noise from torch.distributions."""
    laplace = torch.distributions.Laplace(0.0, scale)

    def run():
        torch.manual_seed(seed)
        counts = np.zeros(num_classes, dtype=int)
        with torch.no_grad():
            remaining = draws
            while remaining > 0:
                size = min(batch, remaining)
                remaining -= size
                noisy = x.repeat((size, 1, 1, 1))
                noisy = noisy + laplace.sample(noisy.shape)
                predictions = model(noisy).argmax(1)
                for idx in predictions.cpu().numpy():
                    counts[idx] += 1
        return counts

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = build_model("cifar_resnet20", 10, [3, 32, 32], CIFAR10_MEAN, CIFAR10_STD).eval()
    nchw_model = copy.deepcopy(model)
    x = torch.rand(3, 32, 32)
    noise = make_noise("laplace", args.sigma)
    smooth = Smooth(model, 10, noise)  # converts `model` to channels-last
    draws = args.n0 + args.n

    def ours():
        generator = torch.Generator().manual_seed(0)
        smooth.certify(x, args.n0, args.n, 0.001, args.batch, generator)

    runs = {
        "bare forward (limit)": bare_forward(model, x, draws, args.batch),
        "Smooth.certify (ours)": ours,
        "Cohen-style baseline": cohen_style(
            nchw_model, x, draws, args.batch, 10, noise.scale, seed=0
        ),
    }
    with torch.inference_mode():  # warm up kernels
        model(x.unsqueeze(0).contiguous(memory_format=torch.channels_last))
        nchw_model(x.unsqueeze(0))
    seconds = best_times(runs, args.repeats)
    rate = {name: draws / s for name, s in seconds.items()}

    print(
        f"ResNet-20, 3x32x32, CPU, {torch.get_num_threads()} threads, laplace sigma={args.sigma}, "
        f"{draws} draws per certify (n0={args.n0}, n={args.n}), batch {args.batch}, "
        f"best of {args.repeats}"
    )
    print(f"{'method':<24}{'seconds':>10}{'draws/s':>12}")
    for name in runs:
        print(f"{name:<24}{seconds[name]:>10.3f}{rate[name]:>12.0f}")
    ours_rate = rate["Smooth.certify (ours)"]
    print(f"ours / limit    = {ours_rate / rate['bare forward (limit)']:.3f}   (target >= 0.9)")
    print(f"ours / baseline = {ours_rate / rate['Cohen-style baseline']:.2f}x speed-up")


if __name__ == "__main__":
    main()
