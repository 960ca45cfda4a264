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
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import yaml
from readme_blocks import command, machine, made_by, spaced, span, table, write

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


class Cost(NamedTuple):
    """One method's measurement at one σ, per point."""

    passes: float  # forward passes
    job: float  # seconds of the whole job
    accuracy: list[float]  # certified accuracy (%) at each radius
    loop: float  # seconds of the certify loop alone


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.3g}" if seconds < 0.1 else spaced(1000 * seconds)


def summary(verdicts: list[tuple[float, dict[str, Cost]]], radii, args) -> str:
    """The README's block: the table per σ and method, and DSSN's ratios against Monte Carlo."""
    rows = []
    for sigma, found in verdicts:
        for method, cost in found.items():
            label = LABELS[method] + (f" (L = {cost.passes:.0f})" if "dssn" in method else "")
            rows.append([f"{sigma:g}", label, spaced(cost.passes), _ms(cost.job), _ms(cost.loop),
                         " / ".join(f"{a:.1f}" for a in cost.accuracy)])  # fmt: skip
    head = ["σ", "method", "forward passes / point", "ms / point (job)",
            "ms / point (certify loop)",
            "certified accuracy % at r = " + " / ".join(f"{r:g}" for r in radii)]  # fmt: skip
    dssn = [found["dssn exact"] for _, found in verdicts]
    fixed = [found["uniform fixed"] for _, found in verdicts]
    seq = [found["uniform sequential"] for _, found in verdicts]

    def ratios(of, field):
        return [getattr(m, field) / getattr(d, field) for m, d in zip(of, dssn, strict=True)]

    ahead = [a - b for d, f in zip(dssn, fixed, strict=True)
             for a, b in zip(d.accuracy, f.accuracy, strict=True)]  # fmt: skip
    return "\n".join([
        f"Measured with `{command(readme=False)}` on the default experiment's "
        f"{training_label(args.training)} digits models (one test point in {args.skip}, "
        f"{machine()}, {args.threads} threads; Monte Carlo n0 = 100, n = {spaced(args.n)}, "
        "α = 0.001; wall time per point of the whole `certify_to_tsv` call, model and data "
        "loading included, and of its certify loop alone):",
        "",
        table(head, rows, numeric_from=2),
        "",
        f"DSSN takes {span(ratios(fixed, 'passes'), spaced)}× fewer forward passes than fixed "
        f"sampling and {span(ratios(seq, 'passes'), spaced)}× fewer than sequential sampling; "
        "its certify loop is " + " / ".join(f"{r:.1f}×" for r in ratios(seq, "loop"))
        + " shorter than sequential's at σ = " + " / ".join(f"{s:g}" for s, _ in verdicts)
        + " (whole jobs, loading included: "
        + " / ".join(f"{r:.1f}×" for r in ratios(seq, "job"))
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
    verdicts, used = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for sigma in params["sweep"]["sigmas"]:
            found = {}
            for method, (noise, options) in METHODS.items():
                model = models / f"{noise}-{args.training}-s{sigma}" / "model.pt"
                used.append(model)
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
                found[method] = Cost(passes, seconds / run.points, list(accuracy), loop)
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
        ahead = [f"{r:g}: {dp - fp:+.1f}"
                 for r, dp, fp in zip(radii, d.accuracy, f.accuracy, strict=True)]  # fmt: skip
        print(f"sigma {sigma}: passes {f.passes / d.passes:,.0f}x fewer than fixed, "
              f"{s.passes / d.passes:,.1f}x fewer than sequential; time per point "
              f"{s.job / d.job:,.1f}x (job) and {s.loop / d.loop:,.1f}x (loop) shorter than "
              f"sequential, {f.loop / d.loop:,.0f}x (loop) than fixed; dssn minus uniform "
              f"fixed, points of %: {', '.join(ahead)}")  # fmt: skip
    if args.readme:
        write({"certify-cost": summary(verdicts, radii, args)}, made_by(used))


if __name__ == "__main__":
    main()
