# Validation, wildcards and paths shared by every rule.

import math
import re
import shlex
from pathlib import Path

from l1cert import pipeline
from l1cert.report import expected_outputs
from l1cert.utils import L1CertError, parse_radii

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# The schema's train: and certify: sections come from l1cert.config's dataclasses. Numbers given
# with --config arrive as strings: they are converted where the schema wants numbers.
SCHEMA = Path(workflow.basedir) / "workflow/schemas/params.schema.yaml"
config.update(pipeline.coerce_numbers(dict(config), pipeline.params_schema(SCHEMA)))
validate(config, pipeline.params_schema_file(SCHEMA))


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
try:  # what every certify and report job would refuse hours later, refused now
    RADII = parse_radii(config["report"]["radii"])
except L1CertError as err:
    raise WorkflowError(f"report.radii: {err}") from None
if RADII != sorted(set(RADII)) or not all(math.isfinite(r) for r in RADII):
    raise WorkflowError(f"report.radii must be increasing finite numbers, not {config['report']['radii']!r}")

# Models are named as DVC's stages name their paths (pipeline.trained_names); imported models
# (`models:`) are named by their entry and skip training.
TRAINED = pipeline.trained_names(GRID)
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


SOURCE = pipeline.Source(config)  # each rule's command line, built as dvc.yaml's is


def code(command):
    """The l1cert modules `l1cert COMMAND` runs (the installed l1cert's files): inputs, so that
    editing them reruns the jobs they decide, as DVC's code deps do (one function computes
    both)."""
    return pipeline.code_deps(command, absolute=True)


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
