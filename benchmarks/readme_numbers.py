"""Write the default experiment's numbers into README.md from a run of it, so that the README
quotes a run of the current code and nothing typed by hand.

    python benchmarks/readme_numbers.py --run DIR      # run it in a copy of the project, timed
    python benchmarks/readme_numbers.py                # or read a finished run's results/

It writes the run's settings (the hero figure's caption), its envelope table, an excerpt of
`dvc metrics show` and, with `--run`, the run's wall time (install excluded), as the blocks of
`benchmarks/readme_blocks.py`; its models and certify files must have been made by the current
code.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from readme_blocks import README, ROOT, machine, made_by_run, spaced, table, write

from l1cert.labels import bound_label, training_label
from l1cert.layout import HEADLINE, all_bounds

PROJECT = ["Snakefile", "params.yaml", "workflow", "config"]


def _envelope(results: Path) -> tuple[list[str], list[dict]]:
    with open(results / "tables" / "envelope.csv") as f:
        rows = list(csv.DictReader(f))
    radii = list(dict.fromkeys(r["radius"] for r in rows))
    return radii, rows


def _sidecars(results: Path) -> list[dict]:
    files = sorted((results / "certify").glob("*/*.json"))
    if not files:
        sys.exit(f"no merged certify files under {results}/certify: run the default experiment")
    return [json.loads(p.read_text()) for p in files]


def envelope_table(results: Path) -> str:
    """The envelope over σ per training and bound: certified accuracy (%) at each radius, the
    best ACR over σ and the forward passes per point (mean over the σ models)."""
    radii, rows = _envelope(results)
    summary = json.loads((results / "summary-full.json").read_text())
    keys = list(dict.fromkeys((r["training"], r["bound"]) for r in rows))
    lines = []
    for training, bound in keys:
        cells = {r["radius"]: r for r in rows if (r["training"], r["bound"]) == (training, bound)}
        found = summary[f"{training}/{bound}"]
        accuracy = [f"{100 * float(cells[r]['certified_accuracy']):.1f}" for r in radii]
        passes = "" if found["passes"] is None else spaced(found["passes"])
        lines.append([training_label(training), bound_label(bound), *accuracy,
                      f"{found['acr']:.3f}", passes])  # fmt: skip
    head = ["training", "certificate", *(f"r = {r}" for r in radii), "ACR", "passes / point"]
    return table(head, lines, numeric_from=2)


def run_settings(sidecars: list[dict]) -> str:
    """One line: the default run's models, test points and sampling."""
    sampled = [s["result"] for s in sidecars if s["result"]["n0"] is not None]
    sigmas = sorted({s["result"]["sigma"] for s in sidecars})
    points = {s["part"]["total_points"] for s in sidecars}
    caps = {r["n"] for r in sampled}
    modes = sorted({r["sampling"] for r in sampled})
    return (
        f"*The default run ({len(sidecars)} models; {', '.join(modes)} sampling, n ≤ "
        f"{spaced(max(caps))} draws per point; DSSN exact): the best certified accuracy over "
        f"σ ∈ {{{', '.join(f'{s:g}' for s in sigmas)}}} at each ℓ1 radius on the "
        f"{max(points)} test digits, for each certificate*"
    )


def metrics_excerpt(results: Path, rows: int = 3) -> str:
    """The first rows of `dvc metrics show` on the run, laid out as DVC prints them (files in
    dvc.yaml's order, the bounds' registry order), and the table's size."""
    files = [results / HEADLINE / f"{b}.json" for b in all_bounds()]
    values = {f.stem: json.loads(f.read_text()) for f in files}
    columns = sorted({f"{t}.{k}" for v in values.values() for t, d in v.items() for k in d})
    lines = [["Path", *columns]]
    for name, found in values.items():
        flat = {f"{t}.{k}": x for t, d in found.items() for k, x in d.items()}
        lines.append(
            [
                f"results/{HEADLINE}/{name}.json",
                *(str(flat[c]) if flat.get(c) is not None else "-" for c in columns),
            ]
        )
    # DVC pads the path column by 2 and the others by 4
    widths = [max(len(line[i]) for line in lines) + (4 if i else 2)
              for i in range(len(columns) + 1)]  # fmt: skip
    text = ["".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    return (
        f"For the default experiment the table is {len(files)} rows by {len(text[0])} "
        f"characters:\n\n```\n" + "\n".join(text[: rows + 1]) + "\n...\n```"
    )


def run_time(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return (f"*Measured: the default experiment took {minutes} min {rest} s (install excluded) "
            f"on a {machine()}.*")  # fmt: skip


def blocks(results: Path) -> dict[str, str]:
    """The blocks written from the run in `results`."""
    return {"default-run-settings": run_settings(_sidecars(results)),
            "default-run-envelope": envelope_table(results),
            "default-run-metrics": metrics_excerpt(results)}  # fmt: skip


def run_default_experiment(where: Path) -> tuple[Path, float]:
    """Run the default experiment in a copy of the project at `where`: its results/ and the
    run's wall time."""
    where.mkdir(parents=True, exist_ok=True)
    for name in PROJECT:
        source, target = ROOT / name, where / name
        if target.exists():
            sys.exit(f"{target} exists: --run wants a fresh folder")
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)
    command = ["snakemake", "--profile", "workflow/profiles/default"]
    print("+ " + " ".join(command), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=where, check=True, stdout=sys.stderr)
    return where / "results", time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        type=Path,
        metavar="DIR",
        help="run the default experiment in a copy of the project in DIR",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args()
    seconds = None
    if args.run:
        args.results, seconds = run_default_experiment(args.run)
    digest = made_by_run(args.results)
    written = blocks(args.results)
    if seconds is not None:
        written["default-run-time"] = run_time(seconds)
    write(written, digest, args.readme)


if __name__ == "__main__":
    main()
