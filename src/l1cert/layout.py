"""Where the pipeline's files live, and every file a report writes: one catalogue that the
Snakefile, `l1cert.pipeline` (both engines' outputs) and `l1cert.report` share.

Torch- and matplotlib-free, so parsing the Snakefile stays quick.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from l1cert.noise import NOISES

MANIFEST = "results/data/{dataset}.json"
TRAINED = "{noise}-{training}-s{sigma}"  # a sweep model's name
MODEL_DIR = "results/models/{dataset}/{model}"  # model.pt, train-log.csv, metrics.json
CERTIFY = "results/certify/{dataset}/{model}"  # its shards inside, the merged file beside
# Each job's log (its stderr: progress, what it read and wrote, its error), named alike under
# both engines: Snakemake's rules redirect into it, DVC's commands pass `l1cert --log`.
LOGS = {
    "data": "logs/data/{dataset}.log",
    "train": "logs/train/{dataset}/{model}.log",
    "import": "logs/import/{dataset}/{model}.log",
    "certify": "logs/certify/{dataset}/{model}/shard-{shard}.log",
    "merge": "logs/merge/{dataset}/{model}.log",
    "report": "logs/report.log",
    "job_costs": "logs/benchmarks/jobs.log",
}
# Snakemake's record of each train and certify job (its `benchmark:` files: seconds, peak
# memory, CPU time) and their summary in its HTML report; DVC keeps no such record.
JOB_RECORD = "logs/benchmarks/{stage}/{dataset}/{job}.tsv"
JOB_COSTS = "logs/benchmarks/jobs.csv"

# What a report writes: tables, figures for all datasets and per dataset, their captions, the
# plot data, the DVC metric (a headline per bound, in HEADLINE/), the full summary and the
# per-model metrics.
TABLES = ("certified-accuracy", "envelope", "cost")
FIGURES = ("bound-comparison", "radius-vs-pa")
DATASET_FIGURES = ("certified-accuracy", "comparison", "envelope", "cost")
HEADLINE = "summary"  # the folder of the DVC metric: <bound>.json, one row of `dvc metrics show`
SUMMARY = "summary-full.json"  # every number of the envelopes, seconds included


def all_bounds() -> list[str]:
    """Every bound of every noise, in the noises' order."""
    return [b for noise in NOISES.values() for b in noise.bounds]


def expected_outputs(
    out_dir: str | Path, datasets: Iterable[str], metrics: str | Path | None = None
) -> list[Path]:
    """Every file a report of these datasets writes (for declaring pipeline outputs)."""
    out = Path(out_dir)
    datasets = sorted(set(datasets))
    figures = [*FIGURES, *(f"{d}-{f}" for d in datasets for f in DATASET_FIGURES)]
    files = [out / "tables" / f"{t}.{ext}" for t in TABLES for ext in ("csv", "md", "tex")]
    files += [out / "figures" / f"{f}.{ext}" for f in figures for ext in ("png", "pdf")]
    files += [out / "captions" / f"{name}.rst" for name in (*TABLES, *figures)]
    files += [out / "plots" / "certified-accuracy.csv"]
    files += [out / "plots" / f"{d}-{b}.csv" for d in datasets for b in all_bounds()]
    files += [out / HEADLINE / f"{b}.json" for b in all_bounds()]
    files.append(out / SUMMARY)
    files.append(Path(metrics) if metrics else out / "metrics.json")
    return files


def plot_outputs(out_dir: str | Path, datasets: Iterable[str]) -> list[Path]:
    """Of `expected_outputs`, what DVC shows as plots: the PNG figures, and the long plot data
    (certified accuracy against radius of every model and bound), which renders offline with
    the page in workflow/plots/ (.dvc/config)."""
    out, datasets = Path(out_dir), sorted(set(datasets))
    figures = [p for p in expected_outputs(out, datasets) if p.suffix == ".png"]
    return figures + [out / "plots" / "certified-accuracy.csv"]
