"""What an l1 certificate costs: DSSN's exact counts against uniform-noise Monte Carlo.

On the default experiment's trained digits models, per σ and training, every `--skip`-th test
point is certified three ways: `dssn` (exact: its L splits), `uniform` with fixed sampling
(Cohen et al.'s CERTIFY, n0 = 100, n = 100 000) and `uniform` with sequential sampling (the same
cap, deciding the report radii). Printed per σ: forward passes per point and wall time per point
of each (of the whole job, model and data loading included, and of its certify loop alone, as
the sidecar records it), the ratios the DSSN issue targets (passes: ≥ 100× fewer than fixed
and ≥ 10× fewer than sequential; wall time ≥ 10× shorter than sequential), and certified
accuracy at the report radii of each (DSSN against the uniform envelope of the same σ).

    snakemake --profile workflow/profiles/default          # trains the models first
    python benchmarks/certify_cost.py [--skip 2] [--models results/models/digits] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from readme_blocks import spaced, span, table, write

from l1cert.certify import certify_to_tsv
from l1cert.labels import training_label
from l1cert.runs import read_run
from l1cert.utils import parse_radii

ROOT = Path(__file__).resolve().parents[1]
METHODS = {  # name: (noise of the model, certify options)
    "dssn exact": ("dssn", {}),
    "uniform fixed": ("uniform", {"sampling": "fixed"}),
    "uniform sequential": ("uniform", {"sampling": "sequential"}),
}


def certify(model: Path, out: Path, options: dict, skip: int, repeat: int):
    """The certificates and wall time of the fastest of `repeat` identical runs (a shared
    machine's pauses only ever add time)."""
    runs = []
    for i in range(repeat):
        path = out.with_name(f"{out.stem}-{i}.tsv")
        start = time.perf_counter()
        certify_to_tsv(model, path, skip=skip, batch=1000, progress=False, **options)
        runs.append((time.perf_counter() - start, path))
    seconds, path = min(runs)
    return read_run(path), seconds


LABELS = {"dssn exact": "`dssn` exact", "uniform fixed": "`uniform` fixed",
          "uniform sequential": "`uniform` sequential"}  # fmt: skip


def summary(verdicts, radii, args) -> str:
    """The README's block: the table per σ and method, and DSSN's ratios against Monte Carlo."""
    rows = []
    for sigma, found in verdicts:
        for method, (passes, job, accuracy, loop) in found.items():
            label = LABELS[method] + (f" (L = {passes:.0f})" if method == "dssn exact" else "")
            shown = " / ".join(f"{a:.1f}" for a in accuracy)
            rows.append([f"{sigma:g}", label, spaced(passes), f"{1000 * job:.3g}",
                         f"{1000 * loop:.3g}", shown])  # fmt: skip
    head = ["σ", "method", "forward passes / point", "ms / point (job)",
            "ms / point (certify loop)",
            "certified accuracy % at r = " + " / ".join(f"{r:g}" for r in radii)]  # fmt: skip
    d = [f["dssn exact"] for _, f in verdicts]
    fx = [f["uniform fixed"] for _, f in verdicts]
    sq = [f["uniform sequential"] for _, f in verdicts]
    sigmas = " / ".join(f"{s:g}" for s, _ in verdicts)
    ahead = [a - b for x, y in zip(d, fx, strict=True) for a, b in zip(x[2], y[2], strict=True)]
    return "\n".join([
        f"Measured with `python benchmarks/certify_cost.py --skip {args.skip} --repeat "
        f"{args.repeat}` on the default experiment's {training_label(args.training)} digits "
        f"models (one test point in {args.skip}, {os.cpu_count()}-core CPU; Monte Carlo "
        f"n0 = 100, n = {spaced(args.n)}, α = 0.001; wall time per point of the whole "
        "`certify_to_tsv` call, model and data loading included, and of its certify loop "
        "alone):",
        "",
        table(head, rows, numeric_from=2),
        "",
        f"DSSN takes {span([f[0] / x[0] for f, x in zip(fx, d, strict=True)], spaced)}× "
        f"fewer forward passes than fixed sampling and "
        f"{span([s[0] / x[0] for s, x in zip(sq, d, strict=True)], spaced)}× fewer than "
        f"sequential sampling; its certify loop is "
        + " / ".join(f"{s[3] / x[3]:.1f}×" for s, x in zip(sq, d, strict=True))
        + f" shorter than sequential's at σ = {sigmas} (whole jobs, loading included: "
        + " / ".join(f"{s[1] / x[1]:.1f}×" for s, x in zip(sq, d, strict=True))
        + "). Its certified accuracy minus uniform noise's (fixed sampling) at the same σ and "
        f"radius: {min(ahead):+.1f} to {max(ahead):+.1f} points.",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "results/models/digits"))
    parser.add_argument("--skip", type=int, default=2, help="every skip-th test point")
    parser.add_argument("--n", type=int, default=100_000, help="Monte Carlo n (sequential cap)")
    parser.add_argument("--training", default="type1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="time each run this often")
    parser.add_argument("--readme", action="store_true", help="write the results into README.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    radii = parse_radii(params["report"]["radii"])
    models = Path(args.models)
    print(f"digits, every {args.skip}-th test point, {args.training}; Monte Carlo n0 = 100, "
          f"n = {args.n:,}, alpha = 0.001; radii {radii}; {args.threads} threads; wall time: "
          f"the shortest of {args.repeat} run(s)")  # fmt: skip
    header = (f"{'sigma':>5} {'method':<19} {'passes/pt':>10} {'job ms/pt':>9} "
              f"{'loop ms/pt':>10}  certified accuracy %")  # fmt: skip
    print(header)
    verdicts = []
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in params["sweep"]["sigmas"]:
            found = {}
            for method, (noise, options) in METHODS.items():
                model = models / f"{noise}-{args.training}-s{sigma}" / "model.pt"
                extra = (
                    {"n0": 100, "n": args.n, "alpha": 0.001, "seed": 0} if noise != "dssn" else {}
                )
                if options.get("sampling") == "sequential":
                    extra["radii"] = radii
                out = Path(tmp) / f"{noise}-{sigma}-{method.split()[1]}.tsv"
                run, seconds = certify(model, out, {**options, **extra}, args.skip, args.repeat)
                bound = run.bounds[0]
                passes = float(np.mean(run.passes))
                accuracy = 100 * run.accuracy(bound, radii)
                loop = run.certify_seconds / run.points  # the certify loop, setup left out
                found[method] = (passes, seconds / run.points, accuracy, loop)
                shown = " ".join(f"{a:5.1f}" for a in accuracy)
                job = 1000 * seconds / run.points
                print(f"{sigma:>5} {method:<19} {passes:>10,.0f} {job:>9.3f} "
                      f"{1000 * loop:>10.3f}  {shown}")  # fmt: skip
            verdicts.append((sigma, found))
    print(
        "\nratios (targets: passes vs fixed >= 100, vs sequential >= 10; time vs sequential >= 10)"
    )
    for sigma, found in verdicts:
        d, f, s = found["dssn exact"], found["uniform fixed"], found["uniform sequential"]
        ahead = [f"{r:g}: {dp - fp:+.1f}" for r, dp, fp in zip(radii, d[2], f[2], strict=True)]
        print(f"sigma {sigma}: passes {f[0] / d[0]:,.0f}x fewer than fixed, "
              f"{s[0] / d[0]:,.1f}x fewer than sequential; time per point {s[1] / d[1]:,.1f}x "
              f"(job) and {s[3] / d[3]:,.1f}x (loop) shorter than sequential, {f[3] / d[3]:,.0f}x "
              f"(loop) than fixed; dssn minus uniform fixed, points of %: "
              f"{', '.join(ahead)}")  # fmt: skip
    if args.readme:
        write({"certify-cost": summary(verdicts, radii, args)},
              f"python benchmarks/certify_cost.py --skip {args.skip} --repeat {args.repeat} "
              "--readme")  # fmt: skip


if __name__ == "__main__":
    main()
