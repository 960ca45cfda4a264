"""The GPU paths, checked in one short run: training, certification, and their throughput.

On a CUDA machine (`--device auto` picks it) this runs in a few minutes and exercises what
tests on a CPU cannot: a few training steps of every objective under every noise on
CIFAR-shaped inputs (ResNet-20), certification of a few points with fixed and sequential
sampling and DSSN's exact counting in fp32 and bf16, eager and compiled, and the throughput of
certification against a Cohen-style loop and the bare forward pass. It prints one table and
exits non-zero if any check failed. `--quick` shrinks every size (and takes a small MLP for the
ResNet) so the same code runs on a CPU in under a minute (a test runs it: the script is known
to work before a GPU ever runs it).

    python benchmarks/device_check.py [--quick] [--device auto]
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass

import torch

from l1cert.config import TrainConfig
from l1cert.data import CIFAR10_MEAN, CIFAR10_STD
from l1cert.models import build_model
from l1cert.names import TRAININGS
from l1cert.noise import NOISES
from l1cert.objectives import train_step
from l1cert.points import Draws, point_seed
from l1cert.smoothing import Smooth
from l1cert.utils import resolve_device

SHAPE, CLASSES, GRID, SIGMA = (3, 32, 32), 10, 255, 0.5


@dataclass(frozen=True)
class Sizes:
    arch: str  # the base classifier
    batch: int  # training examples per step, certify noisy inputs per forward batch
    steps: int  # training steps per objective and noise
    points: int  # points certified per way
    n0: int
    n: int
    throughput_draws: int


FULL = Sizes(
    arch="cifar_resnet20", batch=256, steps=3, points=4, n0=100, n=10_000, throughput_draws=100_000
)
QUICK = Sizes(arch="digits_mlp", batch=8, steps=1, points=2, n0=10, n=100, throughput_draws=64)


def images(count: int, device, seed: int) -> torch.Tensor:
    """CIFAR-shaped inputs on the 8-bit grid (DSSN certifies those only)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (count, *SHAPE), generator=generator) / 255.0).to(device)


def make_noise(name: str, seed: int = 0):
    return NOISES[name].for_model(SIGMA, GRID, list(SHAPE), seed)


def model_on(device, sizes: Sizes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(sizes.arch, CLASSES, list(SHAPE), CIFAR10_MEAN, CIFAR10_STD).to(device)


def synchronized(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_training(device, sizes: Sizes) -> list[tuple]:
    rows = []
    x = images(sizes.batch, device, seed=1)
    y = torch.randint(0, CLASSES, (sizes.batch,), generator=torch.Generator().manual_seed(2))
    y = y.to(device)
    for noise_name in NOISES:
        for training in TRAININGS:
            model = model_on(device, sizes)
            optimizer = torch.optim.SGD(model.parameters(), 0.01, momentum=0.9)
            config = TrainConfig(arch=sizes.arch, noise=noise_name, sigma=SIGMA,
                                 training=training)  # fmt: skip
            noise, rng = make_noise(noise_name), torch.Generator(device=device).manual_seed(3)
            synchronized(device)
            start = time.perf_counter()
            for step in range(sizes.steps):
                loss, _, _ = train_step(model, optimizer, x, y, noise, rng, config, step)
            synchronized(device)
            seconds = (time.perf_counter() - start) / sizes.steps
            ok = bool(torch.isfinite(loss))
            rows.append(("train", f"{noise_name} {training}", ok, f"loss {float(loss):.3f}",
                         f"{sizes.batch / seconds:,.0f} examples/s"))  # fmt: skip
    return rows


def check_certify(device, sizes: Sizes) -> list[tuple]:
    rows = []
    points = list(enumerate(images(sizes.points, device, seed=4)))
    compiles = (False, True) if device.type == "cuda" else (False,)
    for precision in ("fp32", "bf16"):
        for compile in compiles:
            how = f"{precision}{' compiled' if compile else ''}"
            for noise_name, cls in NOISES.items():
                noise = make_noise(noise_name)
                smooth = Smooth(model_on(device, sizes), CLASSES, noise, compile=compile,
                                precision=precision)  # fmt: skip
                for mode in cls.samplings:
                    ways = {
                        "fixed": lambda s=smooth: s.certify_fixed(
                            points, sizes.n0, sizes.n, 0.001, sizes.batch, seed=0),
                        "exact": lambda s=smooth: s.certify_exact(points, sizes.batch),
                        "sequential": lambda s=smooth: s.certify_sequential(
                            points, sizes.n0, sizes.n, 0.001, sizes.batch, [0, 0.25, 0.5], 0),
                    }  # fmt: skip
                    start = time.perf_counter()
                    certs = dict(ways[mode]())
                    synchronized(device)
                    seconds = (time.perf_counter() - start) / len(points)
                    ok = sorted(certs) == [i for i, _ in points] and all(
                        -1 <= c.prediction < CLASSES and all(
                            r >= 0 and r == r for r in c.bound_radii.values())
                        for c in certs.values()
                    )  # fmt: skip
                    timing = f"{seconds * 1000:,.1f} ms/point"
                    rows.append(("certify", f"{noise_name} {mode} {how}", ok,
                                 f"{len(certs)} points", timing))  # fmt: skip
    return rows


def check_throughput(device, sizes: Sizes) -> list[tuple]:
    """Draws per second: the bare forward pass on a fixed batch, a Cohen-style loop (NCHW, a
    fresh noise tensor per batch, votes counted on the host), and `Smooth`'s counting."""
    model, x = model_on(device, sizes).eval(), images(1, device, seed=5)[0]
    batch, draws = sizes.batch, sizes.throughput_draws
    fixed = x.expand(batch, *SHAPE).contiguous()

    def bare():
        with torch.inference_mode():
            for _ in range(0, draws, batch):
                model(fixed).argmax(1)

    def cohen_style():
        counts = [0] * CLASSES
        with torch.inference_mode():
            for start in range(0, draws, batch):
                size = min(batch, draws - start)
                noisy = x.repeat(size, 1, 1, 1) + torch.randn(size, *SHAPE, device=device) * SIGMA
                for label in model(noisy).argmax(1).cpu().tolist():
                    counts[label] += 1

    smooth = Smooth(model_on(device, sizes), CLASSES, "gaussian", SIGMA)

    def ours():
        smooth._count(x, draws, batch, Draws(point_seed(0, 0), device), 1)

    rates = {}
    for name, run in (("bare forward", bare), ("Cohen-style loop", cohen_style),
                      ("l1cert Smooth", ours)):  # fmt: skip
        run()  # warm up (kernels, allocator)
        synchronized(device)
        start = time.perf_counter()
        run()
        synchronized(device)
        rates[name] = draws / (time.perf_counter() - start)
    baseline = rates["Cohen-style loop"]
    return [("throughput", name, True, f"{rate:,.0f} draws/s", f"{rate / baseline:.2f}x Cohen")
            for name, rate in rates.items()]  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes (a CPU, CI).")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    device, sizes = resolve_device(args.device), QUICK if args.quick else FULL
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"l1cert device check: torch {torch.__version__}, {name}, "
          f"{'quick' if args.quick else 'full'} sizes {sizes}", flush=True)  # fmt: skip
    rows, started = [], time.perf_counter()
    for check in (check_training, check_certify, check_throughput):
        try:
            rows += check(device, sizes)
        except Exception:  # one table whatever fails; the trace says where
            traceback.print_exc()
            rows.append((check.__name__.removeprefix("check_"), "(crashed)", False, "", ""))
    widths = [max(len(str(r[i])) for r in rows) for i in (0, 1, 3, 4)]
    for what, case, ok, result, speed in rows:
        cells = (what, case, result, speed)
        line = "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True))
        print(f"{'ok  ' if ok else 'FAIL'}  {line}")
    failed = sum(not ok for _, _, ok, _, _ in rows)
    print(f"{len(rows) - failed} ok, {failed} failed in {time.perf_counter() - started:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
