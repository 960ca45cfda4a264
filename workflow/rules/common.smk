# Validation, wildcards and paths shared by every rule.

import math
import shlex
from pathlib import Path

from l1cert import experiment, pipeline, schema
from l1cert.layout import CERTIFY, JOB_COSTS, JOB_RECORD, LOGS, MANIFEST, MODEL_DIR
from l1cert.layout import expected_outputs
from l1cert.utils import L1CertError

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The schema's stage sections come from l1cert.config's dataclasses. Numbers given with --config
# arrive as strings: they are converted where the schema wants numbers.
SCHEMA = Path(workflow.basedir) / "workflow/schemas/params.schema.yaml"
config.update(schema.coerce_numbers(dict(config), schema.params_schema(SCHEMA)))
validate(config, schema.params_schema_file(SCHEMA))


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
# What a job would refuse hours later, refused now; against this machine's CPUs only where jobs
# run here (Snakemake submits them elsewhere when it was given --jobs for a cluster executor,
# as the slurm profile does).
try:
    schema.check_params(config, machine=workflow.resource_settings.nodes is None)
except L1CertError as err:
    raise WorkflowError(str(err)) from None

DATASET = config["dataset"]
SWEEP = config["sweep"]
SHARDS = config["certify"]["shards"]

# Models are named as DVC's stages name their paths (pipeline.trained_names); imported models
# (`models:`) are named by their entry and skip training.
TRAINED = pipeline.trained_names(SWEEP)
IMPORTED = {entry["name"]: entry for entry in config.get("models", [])}
NOISE_OF = pipeline.model_noises(config)  # every model's noise: what decides its certify jobs
MODELS = list(NOISE_OF)

if len(IMPORTED) != len(config.get("models", [])):
    raise WorkflowError("models: two entries have the same name")
if clash := sorted(set(IMPORTED) & set(TRAINED)):
    raise WorkflowError(f"models: {', '.join(clash)} is the name of a sweep model; choose another")
if IMPORTED and DATASET not in ("cifar10", "imagenet"):  # what `l1cert import` converts
    raise WorkflowError(
        f"models: l1cert imports checkpoints for cifar10 or imagenet, not {DATASET}"
    )


def one_of(names):
    """A wildcard constraint matching exactly these names (nothing, when there are none)."""
    import re

    return "|".join(re.escape(str(name)) for name in names) or "(?!)"


wildcard_constraints:
    dataset=DATASET,
    noise=one_of(SWEEP["noises"]),
    training=one_of(SWEEP["trainings"]),
    sigma=one_of(SWEEP["sigmas"]),
    model=one_of(MODELS),
    imported=one_of(IMPORTED),


scattergather:
    certify=len(SHARDS),


TRAINED_DIR = MODEL_DIR.format(dataset="{dataset}", model="{noise}-{training}-s{sigma}")
IMPORTED_DIR = MODEL_DIR.format(dataset="{dataset}", model="{imported}")
# Every file `l1cert report --out-dir results` writes.
REPORT = [str(path) for path in expected_outputs("results", [DATASET])]


SOURCE = pipeline.Source(config)  # each rule's command line, built as dvc.yaml's is


def decides(stage):
    """A rule's params: what decides its jobs' results (pipeline.decides), as plain values of
    the wildcards alone, which Snakemake's params trigger compares run to run."""
    if stage == "certify":
        return lambda w: pipeline.decides(config, stage, noise=NOISE_OF[w.model])
    if stage == "train":
        return lambda w: pipeline.decides(config, stage, training=w.training)
    return pipeline.decides(config, stage)


def code(stage):
    """The l1cert modules that decide a stage's results (the installed l1cert's files): inputs,
    so that editing them reruns the jobs they decide, as DVC's code deps do (one function
    computes both)."""
    return pipeline.code_deps(stage, absolute=True)


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
