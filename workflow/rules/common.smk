# Validation, wildcards and paths shared by every rule.

import math
import re
import shlex
from pathlib import Path

from l1cert.report import expected_outputs

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


validate(config, "../schemas/params.schema.yaml")


def check_finite(node, where="config"):
    """JSON Schema's bounds let .nan through (every comparison with NaN is false)."""
    if isinstance(node, dict):
        for key, value in node.items():
            check_finite(value, f"{where}['{key}']")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check_finite(value, f"{where}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise WorkflowError(f"{where} must be a finite number, not {node}")


check_finite(config)

DATASET = config["dataset"]
GRID = config["grid"]
SHARDS = config["certify"]["shards"]

if sorted(SHARDS) != list(range(1, len(SHARDS) + 1)):
    raise WorkflowError(f"certify.shards must list the shard numbers 1..K once each, not {SHARDS}")

# A model is named <noise>-<training>-s<sigma>, sigma written as Python's str() writes it
# (0.5, 1.0): the same text DVC's ${item.sigma} gives, so both engines agree on paths.
# Imported models (`models:`) are named by their entry and skip training.
TRAINED = [
    f"{n}-{t}-s{s}" for n in GRID["noises"] for t in GRID["trainings"] for s in GRID["sigmas"]
]
IMPORTED = {entry["name"]: entry for entry in config.get("models", [])}
MODELS = TRAINED + list(IMPORTED)

if len(IMPORTED) != len(config.get("models", [])):
    raise WorkflowError("models: two entries have the same name")
if clash := sorted(set(IMPORTED) & set(TRAINED)):
    raise WorkflowError(f"models: {', '.join(clash)} is the name of a grid model; choose another")
if IMPORTED and DATASET not in ("cifar10", "imagenet"):  # what `l1cert import` converts
    raise WorkflowError(f"models: l1cert imports checkpoints for cifar10 or imagenet, not {DATASET}")


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, when there are none)."""
    return "|".join(re.escape(str(name)) for name in names) or "(?!)"


wildcard_constraints:
    dataset=DATASET,
    noise=one_of(GRID["noises"]),
    training=one_of(GRID["trainings"]),
    sigma=one_of(GRID["sigmas"]),
    model=one_of(MODELS),
    imported=one_of(IMPORTED),


scattergather:
    certify=len(SHARDS),


MANIFEST = "results/data/{dataset}.json"
TRAINED_DIR = "results/models/{dataset}/{noise}-{training}-s{sigma}"
IMPORTED_DIR = "results/models/{dataset}/{imported}"
MODEL_DIR = "results/models/{dataset}/{model}"  # either of the two
CERTIFY = "results/certify/{dataset}/{model}"
# Every file `l1cert report --out-dir results` writes.
REPORT = [str(path) for path in expected_outputs("results", [DATASET])]


def data_options(wildcards=None):
    """Where the dataset lives, for every command that reads it (ImageNet: $IMAGENET_DIR)."""
    return f"--root {shlex.quote(config['data']['root'])} --image-size {config['data']['image_size']}"


def certify_options(wildcards=None):
    """The certify section as options; sequential sampling decides the report's radii."""
    options = cli_options(config["certify"], skip=("shards",))
    if config["certify"]["sampling"] == "sequential":
        options += f" --radii {shlex.quote(config['report']['radii'])}"
    return options


def cli_options(section, prefix="", skip=()):
    """A params section as `l1cert` options, spelled as DVC's ${section} writes them
    (`--batch_size 64 --type2.norm linf`), so both engines pass the same values."""
    options = []
    for key, value in section.items():
        if key in skip:
            continue
        if isinstance(value, dict):
            options.append(cli_options(value, f"{prefix}{key}."))
        else:
            options.append(f"--{prefix}{key} {shlex.quote(str(value))}")
    return " ".join(options)


def every_model(pattern):
    """`pattern` for every model, trained and imported."""
    return expand(pattern, dataset=DATASET, model=MODELS)


def in_report(path):
    """Figures and tables go into Snakemake's HTML report, each with its caption."""
    path = Path(path)
    if path.parent.name == "figures" and path.suffix == ".png":
        category = "figures"
    elif path.parent.name == "tables" and path.suffix == ".csv":
        category = "tables"
    else:
        return str(path)
    caption = f"../../results/captions/{path.stem}.rst"  # relative to workflow/rules/
    return report(str(path), caption=caption, category=category)
