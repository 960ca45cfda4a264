"""Training throughput of cifar_resnet20 on the CPU, through the training loop's own step.

1. Type 1 images/s, channels_last against the default (contiguous NCHW) memory format.
2. The cost of a Type 2 (SmoothAdv) step relative to a Type 1 step, for m = 2, T = 1 and
   m = 4, T = 10 (m noise draws per example, T PGD steps).
3. With --compile: Type 1 images/s (channels_last) of torch.compile and of bf16 autocast, eager
   and compiled, and the compile time (the first step).

Inputs are random CIFAR-shaped batches: throughput does not depend on pixel values.
Run: python benchmarks/train_throughput.py [--threads N] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import time

import torch

from l1cert.config import TrainConfig, Type2Config
from l1cert.data import CIFAR10_MEAN, CIFAR10_STD
from l1cert.models import build_model
from l1cert.noise import make_noise
from l1cert.objectives import train_step


class Trainer:
    """A fresh cifar_resnet20 with its optimizer; `step()` times one real training step."""

    def __init__(
        self,
        batch_size,
        memory_format=torch.contiguous_format,
        type2=None,
        *,
        compile=False,
        bf16=False,
    ):
        torch.manual_seed(0)
        model = build_model("cifar_resnet20", 10, [3, 32, 32], CIFAR10_MEAN, CIFAR10_STD)
        self.model = model.to(memory_format=memory_format).train()
        # lr 0: the step does all its arithmetic, but random labels cannot drive the weights
        # towards denormal numbers, which would time the CPU's slow path instead.
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        self.noise, self.rng = make_noise("laplace", 0.25), torch.Generator().manual_seed(0)
        self.x = torch.rand(batch_size, 3, 32, 32).contiguous(memory_format=memory_format)
        self.y = torch.randint(0, 10, (batch_size,))
        training = "type1" if type2 is None else "type2"
        self.config = TrainConfig(arch="cifar_resnet20", noise="laplace", sigma=0.25,
                                  training=training, type2=type2)  # fmt: skip
        self.forward = torch.compile(model) if compile else model
        self.bf16 = bf16

    def step(self) -> tuple[float, float]:
        """Wall and CPU seconds (CPU time is what other processes on the machine do not add)."""
        wall, cpu = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            train_step(
                self.forward,
                self.optimizer,
                self.x,
                self.y,
                self.noise,
                self.rng,
                self.config,
                epoch=10**6,  # past the warm-up: the full ε
            )
        return time.perf_counter() - wall, time.process_time() - cpu


def fastest(trainers, steps):
    """Best (wall, CPU) step time of each trainer over interleaved rounds."""
    best = [(float("inf"), float("inf"))] * len(trainers)
    for _ in range(steps):
        for i, trainer in enumerate(trainers):
            wall, cpu = trainer.step()
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="only section 3")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    b = args.batch_size
    print(f"cifar_resnet20, CPU, {args.threads} threads, batch {b}, torch {torch.__version__}")
    if args.compile:
        compiled_and_bf16(b)
        return

    trainers = [Trainer(b), Trainer(b, torch.channels_last)]
    fastest(trainers, 1)  # warm up
    default, last = fastest(trainers, 6)
    print("Type 1 training, images/s (fastest of 6 interleaved steps; wall clock | per CPU-s):")
    print(f"  default (NCHW)   {b / default[0]:8.1f} | {b / default[1]:8.1f}")
    print(
        f"  channels_last    {b / last[0]:8.1f} | {b / last[1]:8.1f}   ratio vs default: "
        f"{default[0] / last[0]:.2f}x wall, {default[1] / last[1]:.2f}x CPU"
    )

    print("Type 2 step cost relative to a Type 1 step (baseline: Type 1, default format):")
    for samples, steps, repeats in ((2, 1, 3), (4, 10, 1)):
        type2 = Type2Config(norm="l1", epsilon=0.05, steps=steps, samples=samples)
        ((wall, cpu),) = fastest([Trainer(b, type2=type2)], repeats)
        # m(T+1) forward-backward passes over the batch: T attack steps plus the update.
        print(
            f"  m={samples}, T={steps:<2}  {wall:7.3f} s/step  {wall / default[0]:5.1f}x wall, "
            f"{cpu / default[1]:5.1f}x CPU  (passes: {samples * (steps + 1)}x)"
        )


def compiled_and_bf16(b):
    cases = {
        "eager fp32": {},
        "compiled fp32": {"compile": True},
        "eager bf16": {"bf16": True},
        "compiled bf16": {"compile": True, "bf16": True},
    }
    trainers = {name: Trainer(b, torch.channels_last, **kw) for name, kw in cases.items()}
    first = {name: trainer.step()[0] for name, trainer in trainers.items()}  # compiles
    fastest(trainers.values(), 1)  # warm up
    best = dict(zip(trainers, fastest(trainers.values(), 6), strict=True))
    eager = best["eager fp32"]
    print("Type 1 training, channels_last, images/s (fastest of 6; wall | per CPU-s), 1st step s:")
    for name, (wall, cpu) in best.items():
        print(
            f"  {name:<14} {b / wall:8.1f} | {b / cpu:8.1f}   {eager[0] / wall:.2f}x wall, "
            f"{eager[1] / cpu:.2f}x CPU   first step {first[name]:6.1f} s"
        )


if __name__ == "__main__":
    main()
