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
from readme_blocks import made_by_run, span, table, write

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


def consistency_settings() -> dict:
    """The consistency objective's m, λ, η as the run used them (the config over params.yaml)."""
    import yaml

    base = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]["consistency"]
    overlay = yaml.safe_load((ROOT / CONFIG).read_text()).get("train", {}).get("consistency", {})
    return {**base, **overlay}


def measure(runs, per_example: float) -> dict:
    """(σ, noise) -> objective -> (ACR under the noise's primary bound, training seconds per
    example)."""
    found = {}
    for sigma in (0.5, 1.0):
        for noise, bound in NOISES.items():
            mine = {r.training: r for r in runs if r.noise == noise and r.sigma == sigma}
            found[sigma, noise] = {
                o: (average_certified_radius(mine[o].bound_radii[bound], mine[o].hits[bound]),
                    mine[o].train_seconds * per_example)
                for o in OBJECTIVES
            }  # fmt: skip
    return found


def consistency_target(found: dict) -> list[str]:
    """Per σ: consistency's ACR ≥ 1.1 × Type 1's at ≤ 2.5 × its time, for two of three noises?"""
    lines = []
    for sigma in (0.5, 1.0):
        cells = []
        for noise in NOISES:
            (acr, time), (acr0, time0) = (found[sigma, noise][o] for o in ("consistency", "type1"))
            cells.append((noise, acr / acr0, time / time0))
        met = sum(ratio >= 1.1 and slower <= 2.5 for _, ratio, slower in cells)
        shown = ", ".join(f"{n} {r:.2f}× ACR at {s:.2f}× time" for n, r, s in cells)
        lines.append(f"σ = {sigma:g}: {met} of 3 noises ({shown}): "
                     f"{'met' if met >= 2 else 'missed'}")  # fmt: skip
    return lines


def objectives_table(found: dict) -> list[str]:
    lines = ["sigma noise    bound    " + "".join(f"{o:>24}" for o in OBJECTIVES)]
    for (sigma, noise), by in found.items():
        acr0 = by["type1"][0]
        cells = [f"{acr:.3f} ({acr / acr0:4.2f}x) {time * 1e3:4.2f}ms" for acr, time in by.values()]
        lines.append(f"{sigma:<5} {noise:<8} {NOISES[noise]:<8} "
                     + "".join(f"{c:>24}" for c in cells))  # fmt: skip
    lines.append("ACR (ratio to type1) and training time per example, ms")
    lines += ["target (consistency >= 1.1x type1's ACR at <= 2.5x its time for 2 of 3 noises) at "
              + line for line in consistency_target(found)]  # fmt: skip
    return lines


def objectives_block(found: dict, consistency: dict) -> str:
    """The README's block: ACR per objective (ratio to Type 1's), the time per example, the
    target's verdict."""
    names = {"laplace": "Laplace", "uniform": "uniform", "dssn": "DSSN"}
    rows = []
    for (sigma, noise), by in found.items():
        acr0 = by["type1"][0]
        others = [f"{by[o][0]:.3f} ({by[o][0] / acr0:.2f}×)" for o in OBJECTIVES[1:]]
        rows.append([f"{sigma:g}", f"{names[noise]} (`{NOISES[noise]}`)", f"{acr0:.3f}",
                     *others])  # fmt: skip
    slower = {o: [by[o][1] / by["type1"][1] for by in found.values()] for o in OBJECTIVES[1:]}
    return "\n".join([
        f"ACR (ratio to `type1`'s) under each noise's own bound; consistency with m = "
        f"{consistency['copies']}, λ = {consistency['weight']:g}, η = "
        f"{consistency['entropy']:g}:",
        "",
        table(["σ", "noise (bound)", *OBJECTIVES], rows, numeric_from=2),
        "",
        "Training time per example, relative to `type1`'s: "
        + ", ".join(f"{o} {span(t, '{:.2f}', '×')}" for o, t in slower.items())
        + f" ({os.cpu_count()} jobs at a time, one per core, so the seconds are noisy). "
        "The target, consistency's ACR at least 1.1 × Type 1's for two of the three noises at "
        "no more than 2.5 × its training time: " + "; ".join(consistency_target(found)) + ".",
    ])  # fmt: skip


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


BOXES = {"uniform": ("uniform", "uniform_box"), "split": ("ssn", "ssn_box")}  # noise: plain, box


def box_curves(runs, radii) -> dict:
    """(objective, noise) -> {plain, "pair", box: envelope over σ, certified accuracy}."""
    from dataclasses import replace

    curves = {}
    for objective in OBJECTIVES:
        for noise, (plain, box) in BOXES.items():
            mine = [r for r in runs if r.noise == noise and r.training == objective]
            paired = [replace(r, bound_radii={"pair": pair_radius(r, plain)},
                              hits={"pair": r.hits[box]}) for r in mine]  # fmt: skip
            found = {e.bound: e.accuracy for e in envelopes(mine, radii)}
            found["pair"] = np.max([m.accuracy("pair", radii) for m in paired], axis=0)
            curves[objective, noise] = found
    return curves


def box_target(curves) -> tuple[bool, list]:
    """The box envelope never below the plain one and above it somewhere, for every objective?"""
    misses = []
    for (objective, noise), found in curves.items():
        plain, box = BOXES[noise]
        never_below = bool(np.all(found[box] >= found[plain] - 1e-12))
        above = bool(np.any(found[box] > found[plain] + 1e-12))
        if not (never_below and above):
            misses.append((objective, box, never_below, above))
    return not misses, misses


def box_table(curves, radii) -> list[str]:
    lines = ["envelope over sigma, % certified at l1 radius " + " ".join(f"{r:g}" for r in radii)]
    for (objective, noise), found in curves.items():
        plain, box = BOXES[noise]
        for name in (plain, "pair", box):
            lines.append(f"  {objective:<12} {name:<12}"
                         + " ".join(f"{100 * a:5.1f}" for a in found[name]))  # fmt: skip
    met, misses = box_target(curves)
    lines.append("target: the box envelope never below the plain one and above somewhere: "
                 + ("met" if met else f"MISSED {misses}"))  # fmt: skip
    return lines


def box_block(curves, radii) -> str:
    """The README's block: Type 1's envelopes, plain against box, and how far the box goes."""
    rows = []
    for noise, (plain, box) in BOXES.items():
        for name in (plain, box):
            rows.append([f"`{name}`", *(f"{100 * a:.1f}" for a in curves["type1", noise][name])])
    gain = max(100 * float(np.max(found[BOXES[noise][1]] - found[BOXES[noise][0]]))
               for (_, noise), found in curves.items())  # fmt: skip
    own = max(100 * float(np.max(found[BOXES[noise][1]] - found["pair"]))
              for (_, noise), found in curves.items())  # fmt: skip
    met, misses = box_target(curves)
    verdict = ("never below the plain one at any radius and above it somewhere, for every "
               "objective" if met else f"missed: {misses}")  # fmt: skip
    return "\n".join([
        "Envelope over σ (Type 1), % certified at ℓ1 radius:",
        "",
        table(["bound", *(f"{r:g}" for r in radii)], rows),
        "",
        f"The box bounds' envelope: {verdict}; at most {gain:.1f} points above the plain bound "
        f"(any objective, any radius), of which the box itself — above the union bound "
        f"λ·(p̲A − p̄B) of the same pair — gives at most {own:.1f} points.",
    ])  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="A finished run's results/ (skip the run).")
    parser.add_argument("--keep", type=Path, help="Run in this folder and keep it.")
    parser.add_argument("--readme", action="store_true", help="write the results into README.md")
    args = parser.parse_args(argv)
    if args.results is None:
        where = args.keep or Path(tempfile.mkdtemp(prefix="l1cert-objectives-"))
        where.mkdir(parents=True, exist_ok=True)
        args.results = run_pipeline(where)
    runs = read_runs(sorted((args.results / "certify" / "digits").glob("*.tsv")), quiet=True)
    per_example = 1.0 / (epochs(args.results) * TRAIN_IMAGES)
    radii = [0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 2]
    print(f"digits, {CONFIG}: {len(runs)} models, fixed sampling; training seconds from each "
          f"checkpoint, measured on {os.cpu_count()} CPUs with Snakemake's default profile (a "
          "job per core, so the times are noisy)")  # fmt: skip
    found, curves = measure(runs, per_example), box_curves(runs, radii)
    print("\n".join(objectives_table(found)))
    print("\n".join(box_table(curves, radii)))
    if args.readme:
        digest = made_by_run(args.results)
        write({"training-objectives": objectives_block(found, consistency_settings()),
               "box-envelope": box_block(curves, radii)}, digest)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
