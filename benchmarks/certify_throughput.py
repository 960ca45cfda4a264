"""Throughput of certification against its limit and against a Cohen-style baseline.

A CIFAR-shaped (3x32x32) ResNet-20 (on CUDA when present, else the CPU). Ways to push noisy
inputs through the same model at the same batch size:

- limit:       the bare forward pass of the model (inference mode, channels-last) on a fixed batch;
- Cohen-style: the straightforward loop of Cohen et al.'s core.py: NCHW fp32, a fresh noisy batch
               per step (x.repeat + a new noise tensor), predictions counted on the host in Python;
- `Smooth.certify` with its base classifier (l1cert.forward) eager in channels-last (today's
  default), compiled, and in bf16 (eager and compiled).

The job that matters is a shard: 100 points x (n0 = 100 + n = 100 000) draws, about 1e7 draws.
Running it in full per method would take hours on a CPU, so each method's job time is
extrapolated: setup (the first call, i.e. compiling, from an empty compile cache) + 100 x (the
n0 selection step, timed as `predict(n0)`, + n / the steady draws/s of certify's estimation
step, timed on --n draws). Ratios are of these job times.

    python benchmarks/certify_throughput.py [--n 4000 --n0 100 --batch 400 --threads 2]
"""

from __future__ import annotations

import os
import tempfile

# compile from scratch, as a fresh job would: the compile time is part of what is measured
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="inductor-bench-"))

import argparse  # noqa: E402
import copy  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from readme_blocks import command, machine, made_by, spaced, table, write  # noqa: E402

from l1cert.data import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from l1cert.models import build_model  # noqa: E402
from l1cert.noise import make_noise  # noqa: E402
from l1cert.smoothing import Smooth  # noqa: E402

JOB_POINTS, JOB_N0, JOB_N = 100, 100, 100_000


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


def timed(run, clock=None) -> float:
    clock = clock or globals()["clock"]
    start = clock()
    run()
    return clock() - start


def best_times(runs: dict, repeats: int) -> dict[str, float]:
    """Fastest of `repeats` rounds; the methods take turns so a busy machine slows all alike."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(timed(run))
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


def cohen_style(model, x, batch: int, num_classes: int, scale: float, seed: int):
    """Cohen et al.'s _sample_noise loop, with Laplace noise from torch.distributions."""
    laplace = torch.distributions.Laplace(
        torch.tensor(0.0, device=x.device), torch.tensor(scale, device=x.device)
    )

    def count(draws: int):
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

    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n0", type=int, default=JOB_N0)
    parser.add_argument("--n", type=int, default=4000, help="draws timed per estimation step")
    parser.add_argument("--batch", type=int, default=400)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    parser.add_argument("--readme", action="store_true", help="write the results into README.md")
    parser.add_argument(
        "--clock", choices=CLOCKS, default="wall", help="cpu: process time, for a shared machine"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    torch.manual_seed(0)
    model = build_model("cifar_resnet20", 10, [3, 32, 32], CIFAR10_MEAN, CIFAR10_STD)
    model = model.to(device).eval()
    nchw_model = copy.deepcopy(model)
    x = torch.rand(3, 32, 32, device=device)
    noise = make_noise("laplace", args.sigma)
    variants = {"eager channels-last (today)": {}, "compiled": {"compile": True}}
    if not args.no_bf16:
        variants["bf16"] = {"precision": "bf16"}
        variants["compiled + bf16"] = {"compile": True, "precision": "bf16"}
    smooths = {name: Smooth(copy.deepcopy(model), 10, noise, **kw) for name, kw in variants.items()}
    model.to(memory_format=torch.channels_last)
    cohen = cohen_style(nchw_model, x, args.batch, 10, noise.scale, seed=0)

    def certify_run(smooth, n):
        def run():
            smooth.certify(x, args.n0, n, 0.001, args.batch, seed=0)
            sync()

        return run

    def select_run(smooth):
        def run():
            smooth.predict(x, args.n0, 0.001, args.batch, seed=0)
            sync()

        return run

    # setup: the first call (compiling happens there, partly in worker processes: wall clock)
    wall = CLOCKS["wall"]
    setup = {"Cohen-style (NCHW)": timed(lambda: (cohen(args.batch), sync()), wall)}
    setup["bare forward (limit)"] = 0.0
    for name, smooth in smooths.items():
        setup[name] = timed(certify_run(smooth, args.batch), wall)
    full = {
        "bare forward (limit)": bare_forward(model, x, args.n0 + args.n, args.batch),
        "Cohen-style (NCHW)": lambda: (cohen(args.n0 + args.n), sync()),
        **{name: certify_run(smooth, args.n) for name, smooth in smooths.items()},
    }
    select = {
        "bare forward (limit)": bare_forward(model, x, args.n0, args.batch),
        "Cohen-style (NCHW)": lambda: (cohen(args.n0), sync()),
        **{name: select_run(smooth) for name, smooth in smooths.items()},
    }
    seconds = best_times(full, args.repeats)
    seconds_n0 = best_times(select, args.repeats)

    rate, job = {}, {}
    for name in full:
        rate[name] = args.n / max(seconds[name] - seconds_n0[name], 1e-9)
        job[name] = setup[name] + JOB_POINTS * (seconds_n0[name] + JOB_N / rate[name])
    where = torch.cuda.get_device_name() if device.type == "cuda" else machine()
    print(
        f"ResNet-20, 3x32x32, {where}, {torch.get_num_threads()} threads, torch "
        f"{torch.__version__}, laplace sigma={args.sigma}, batch {args.batch}, best of "
        f"{args.repeats}, {args.clock} clock;\ndraws/s timed on certify's n={args.n} step, "
        f"n0={args.n0} step timed alone"
    )
    print(
        f"job = {JOB_POINTS} points x (n0={JOB_N0} + n={JOB_N:,}) draws, extrapolated: "
        "setup + points x (n0 step + n / draws/s); setup (wall clock) compiles from an empty cache"
    )
    header = f"{'method':<30}{'setup s':>9}{'n0 step s':>11}{'draws/s':>10}{'job s':>9}"
    print(f"{header}{'vs Cohen':>10}{'vs today':>10}")
    base, today = job["Cohen-style (NCHW)"], job["eager channels-last (today)"]
    for name in full:
        print(
            f"{name:<30}{setup[name]:>9.1f}{seconds_n0[name]:>11.3f}{rate[name]:>10.0f}"
            f"{job[name]:>9.0f}{base / job[name]:>9.2f}x{today / job[name]:>9.2f}x"
        )
    today_rate = rate["eager channels-last (today)"]
    limit = rate["bare forward (limit)"]
    print(f"today / limit = {today_rate / limit:.3f} in draws/s (target >= 0.9)")
    print("targets (CPU, compiled, fp32): >= 1.7x Cohen-style and >= 1.25x today, per job")
    if args.readme:
        write({"certify-throughput": summary(rate, job, setup, where)}, made_by())


def summary(rate: dict, job: dict, setup: dict, where: str) -> str:
    """The README's block: draws/s and the extrapolated job per method, against Cohen et al.'s
    loop and today's eager forward."""
    base, today = job["Cohen-style (NCHW)"], job["eager channels-last (today)"]
    labels = {"bare forward (limit)": "bare forward (the limit)",
              "Cohen-style (NCHW)": "Cohen-style loop (NCHW)",
              "eager channels-last (today)": "eager channels-last (`--compile off`)",
              "compiled": "compiled (`--compile on`)"}  # fmt: skip
    rows = [[labels.get(name, name), spaced(rate[name]), f"{setup[name]:.0f} s",
             f"{spaced(job[name])} s", f"{base / job[name]:.2f}×", f"{today / job[name]:.2f}×"]
            for name in job]  # fmt: skip
    return "\n".join([
        f"Measured with `{command(readme=False)}` (CIFAR ResNet-20 on {where}, torch "
        f"{torch.__version__}, "
        f"{torch.get_num_threads()} threads; a job of {JOB_POINTS} points × "
        f"{spaced(JOB_N0 + JOB_N)} draws, extrapolated from the draws/s, its setup — "
        "compiling from an empty cache — included):",
        "",
        table(["forward", "draws/s", "setup", "job", "vs Cohen-style loop",
               "vs eager channels-last"], rows),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
