"""Which training and which bound: the objectives side by side, and the box bounds beside the
plain ones, on digits (config/digits-training.yaml).

Runs the pipeline on that config in a scratch copy of the project (or reads a run's results
with --results), then prints, for σ = 0.5 and 1.0 and the Laplace, uniform and DSSN models:

- each objective's ACR under the noise's primary bound (teng, uniform, dssn) and its ratio to
  Type 1's (the baseline), with the training seconds per example and their ratio to Type 1's;
  the target: consistency's ACR at least 1.1 × Type 1's for two of the three noises at each σ,
  at no more than 2.5 × its training time;
- the envelope over σ of the box bounds (uniform_box, ssn_box) against the plain ones (uniform,
  ssn) at every radius, per objective; the target: never below, above somewhere. The plain
  bounds use p̲A alone (p̄B = 1 − p̲A), the box ones the pair (p̲A, p̄B) like Theorem 1; the
  "pair" line is the union bound of that same pair, so the box's own share of the gain shows.

    python benchmarks/training_objectives.py [--results DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from l1cert import sequential
from l1cert.analysis import average_certified_radius, envelopes
from l1cert.runs import read_runs

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "config/digits-training.yaml"
OBJECTIVES = ("type1", "type2", "consistency", "stability")
NOISES = {"laplace": "teng", "uniform": "uniform", "dssn": "dssn"}
TRAIN_IMAGES = 1437  # digits' training split
PROJECT = ["Snakefile", "params.yaml", "workflow", "config"]


def run_pipeline(where: Path) -> Path:
    for name in PROJECT:
        source = ROOT / name
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, where / name)
    command = ["snakemake", "--profile", "workflow/profiles/default", "--configfile", CONFIG]
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    subprocess.run(command, cwd=where, check=True, stdout=sys.stderr)
    return where / "results"


def epochs(results: Path) -> int:
    import yaml

    config = yaml.safe_load((ROOT / "params.yaml").read_text())
    overlay = yaml.safe_load((ROOT / CONFIG).read_text())
    return (overlay.get("train") or {}).get("epochs", config["train"]["epochs"])


def objectives_table(runs, per_example: float) -> list[str]:
    lines = ["sigma noise    bound    " + "".join(f"{o:>24}" for o in OBJECTIVES)]
    targets = {}
    for sigma in (0.5, 1.0):
        for noise, bound in NOISES.items():
            found = {r.training: r for r in runs if r.noise == noise and r.sigma == sigma}
            base = found["type1"]
            acr0 = average_certified_radius(base.bound_radii[bound], base.hits[bound])
            cells = []
            for objective in OBJECTIVES:
                run = found[objective]
                acr = average_certified_radius(run.bound_radii[bound], run.hits[bound])
                seconds = run.train_seconds * per_example
                ratio, slower = acr / acr0, run.train_seconds / base.train_seconds
                cells.append(f"{acr:.3f} ({ratio:4.2f}x) {seconds * 1e3:4.2f}ms")
                if objective == "consistency":
                    targets.setdefault(sigma, []).append((noise, ratio, slower))
            lines.append(f"{sigma:<5} {noise:<8} {bound:<8} " + "".join(f"{c:>24}" for c in cells))
    lines.append("ACR (ratio to type1) and training time per example, ms")
    for sigma, found in targets.items():
        met = sum(ratio >= 1.1 and slower <= 2.5 for _, ratio, slower in found)
        shown = ", ".join(f"{n} {r:.2f}x ACR at {s:.2f}x time" for n, r, s in found)
        lines.append(f"target at sigma {sigma}: consistency >= 1.1x type1's ACR at <= 2.5x its "
                     f"time for 2 of 3 noises: {met} of 3 ({shown}) -> "
                     f"{'met' if met >= 2 else 'MISSED'}")  # fmt: skip
    return lines


def pair_radius(run, plain: str) -> np.ndarray:
    """The union bound λ·(p̲A − p̄B) of the pair the box bound uses, from the rows' counts."""
    from l1cert import certify_format as fmt

    table = fmt.read_rows(run.path)
    count, count_b = (np.array(table.column(c, int)) for c in ("count", "count_b"))
    side = fmt.read_sidecar(run.path)["result"]
    ends = sequential.ends(count, count_b, 0, [side["n"]], side["alpha"], side["num_classes"],
                           project=False)  # fmt: skip
    return np.where(ends.pa_joint > ends.pb_upper, side["scale"] * (ends.pa_joint -
                                                                   ends.pb_upper), 0.0)  # fmt: skip


def box_table(runs, radii) -> list[str]:
    from dataclasses import replace

    lines = ["envelope over sigma, % certified at l1 radius " + " ".join(f"{r:g}" for r in radii)]
    verdicts = []
    for objective in OBJECTIVES:
        for noise, plain, box in (
            ("uniform", "uniform", "uniform_box"),
            ("split", "ssn", "ssn_box"),
        ):
            mine = [r for r in runs if r.noise == noise and r.training == objective]
            paired = [replace(r, bound_radii={"pair": pair_radius(r, plain)},
                              hits={"pair": r.hits[box]}) for r in mine]  # fmt: skip
            curves = {e.bound: e.accuracy for e in envelopes(mine, radii)}
            curves["pair"] = np.max([m.accuracy("pair", radii) for m in paired], axis=0)
            for name in (plain, "pair", box):
                lines.append(f"  {objective:<12} {name:<12}"
                             + " ".join(f"{100 * a:5.1f}" for a in curves[name]))  # fmt: skip
            never_below = bool(np.all(curves[box] >= curves[plain] - 1e-12))
            above = bool(np.any(curves[box] > curves[plain] + 1e-12))
            verdicts.append((objective, box, never_below, above))
    met = all(n and a for *_, n, a in verdicts)
    lines.append(
        "target: the box envelope never below the plain one and above somewhere: "
        + ("met" if met else "MISSED " + str([v for v in verdicts if not all(v[2:])]))
    )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="A finished run's results/ (skip the run).")
    parser.add_argument("--keep", type=Path, help="Run in this folder and keep it.")
    args = parser.parse_args(argv)
    if args.results is None:
        where = args.keep or Path(tempfile.mkdtemp(prefix="l1cert-objectives-"))
        where.mkdir(parents=True, exist_ok=True)
        args.results = run_pipeline(where)
    runs = read_runs(sorted((args.results / "certify" / "digits").glob("*.tsv")), quiet=True)
    per_example = 1.0 / (epochs(args.results) * TRAIN_IMAGES)
    radii = [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2]
    print(f"digits, {CONFIG}: {len(runs)} models, fixed sampling; training seconds from each "
          f"checkpoint, measured on {os.cpu_count()} CPUs with Snakemake's default profile (two "
          "jobs at a time, so the times are noisy)")  # fmt: skip
    print("\n".join(objectives_table(runs, per_example)))
    print("\n".join(box_table(runs, radii)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
