"""The pipeline's jobs, said once for both engines: their commands, what reruns them, their code.

Each step's `l1cert` command is built by one function here from a `Source`: Snakemake's rules
call it with the experiment's config, and `dvc_yaml` calls it with DVC's `${...}` placeholders,
which DVC fills from params.yaml, to write dvc.yaml (`l1cert dvc-yaml`; a test checks that the
committed file is current).

What a job passes and is rerun for comes from the settings' declaration (`l1cert.config`), in
the job's context (its dataset, training, and the sampling mode its noise takes):
- a setting that decides the job's result is an option of its command and one of its params:
  Snakemake's rule params (plain values, which its params trigger compares) and DVC's stage
  params (which it compares), and `${key}` in DVC's command;
- a run-only setting (certify's batch and threads, the data root, the loader's workers) is
  passed by value by Snakemake and read from params.yaml at run time under DVC (`--run-params`),
  so changing it reruns nothing in either engine.
Each step's code is the modules that decide its numbers (`l1cert.provenance.stage_code`).
DVC's stages group the jobs whose params are the same list (a type2 training has its own
settings, an exact noise none of the sampling ones); dvc.yaml names the sweep's noises and
trainings, its σ come from params.yaml. Torch-free: Snakemake imports it to build its DAG.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from l1cert.config import CertifyConfig, DataConfig, ReportConfig, TrainConfig
from l1cert.fields import params_decisions
from l1cert.layout import (
    TRAINED,
)
from l1cert.provenance import PACKAGE_DIR, module_file, stage_code

PARAMS = "params.yaml"  # what DVC's stages read (`--run-params`, `--experiment`)
TRAIN_OUTS = ("model.pt", "train-log.csv", "metrics.json")  # metrics: an output, not a DVC metric


@dataclass(frozen=True)
class Source:
    """Where a command takes its settings: the experiment's `config` itself (Snakemake), or,
    with `dvc`, `${key}` placeholders that DVC fills from params.yaml (the structure of the
    jobs, such as which settings decide them, still follows `config`)."""

    config: dict
    dvc: bool = False

    def value(self, key: str) -> str:
        """The setting at dotted `key` (certify.n), as one shell word."""
        return "${" + key + "}" if self.dvc else shlex.quote(str(lookup(self.config, key)))

    def path(self, path: str) -> str:
        return path if self.dvc else shlex.quote(str(path))


def lookup(config: dict, key: str):
    """The value at dotted `key`; KeyError if the params do not hold it."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _has(config: dict, key: str) -> bool:
    try:
        lookup(config, key)
    except KeyError:
        return False
    return True


# --- what each job passes and is rerun for ---------------------------------------------------


def noise_mode(config: dict, noise: str):
    """The sampling mode a certify job of `noise` takes under this experiment."""
    from l1cert.noise import noise_class
    from l1cert.sampling import mode_for

    return mode_for(noise_class(noise), config.get("certify", {}).get("sampling"))


def job_settings(config: dict, stage: str, noise=None, training=None):
    """(option, params key, decides) of every setting in the params that a job of `stage`
    takes; a setting missing from the params takes its default and is not passed."""
    dataset = config["dataset"]
    if stage == "data":
        found = params_decisions(DataConfig, dataset=dataset)
    elif stage == "train":
        found = params_decisions(TrainConfig, dataset=dataset, training=training)
        found += params_decisions(DataConfig, dataset=dataset)
    elif stage == "certify":
        takes = noise_mode(config, noise).takes
        found = params_decisions(CertifyConfig, dataset=dataset, takes=takes)
        found += params_decisions(DataConfig, dataset=dataset)
    elif stage == "report":
        found = params_decisions(ReportConfig)
    else:
        raise KeyError(stage)
    return [(option, key, decides) for option, key, decides in found if _has(config, key)]


def decides(config: dict, stage: str, noise=None, training=None) -> dict:
    """{params key: value} of what decides a job's result: Snakemake's rule params (its params
    trigger reruns a job when one changes); their keys are DVC's stage params."""
    return {
        key: lookup(config, key)
        for _, key, deciding in job_settings(config, stage, noise, training)
        if deciding
    }


def _options(src: Source, stage: str, noise=None, training=None) -> str:
    """A job's settings as options: deciding ones by value or as `${key}`, run-only ones by
    value (Snakemake) or read from params.yaml at run time (DVC)."""
    settings = job_settings(src.config, stage, noise, training)
    parts = [
        f"--{option.replace('_', '-')} {src.value(key)}"
        for option, key, deciding in settings
        if deciding or not src.dvc
    ]
    if src.dvc and not all(deciding for _, _, deciding in settings):
        parts.append(f"--run-params {PARAMS}")
    return " ".join(parts)


# --- commands ----------------------------------------------------------------------------


def data_command(src: Source, manifest: str) -> str:
    return f"l1cert data {_options(src, 'data')} --manifest {src.path(manifest)}"


def train_command(src: Source, noise, sigma, training, out, written=None) -> str:
    """`training` decides the options (its objective's section); `written`, what the command
    says after --training (DVC: ${item.training} for a group whose options are the same)."""
    return (
        f"l1cert train {_options(src, 'train', training=training)} --noise {noise} "
        f"--sigma {sigma} --training {written or training} --device auto --out {src.path(out)}"
    )


def import_command(src: Source, entry: str, dataset: str, out: str) -> str:
    """`entry`: the model's params entry as options (DVC: `${item}`)."""
    return f"l1cert import {entry} --dataset {dataset} --out {src.path(out)}"


def certify_command(src: Source, model: str, noise: str, shard: str, out: str) -> str:
    """`shard` is k/K."""
    return (
        f"l1cert certify --model {src.path(model)} {_options(src, 'certify', noise)} "
        f"--shard {shard} --device auto --out {src.path(out)}"
    )


def merge_command(src: Source, shards: str, out: str) -> str:
    return f"l1cert merge {shards} --out {src.path(out)}"


def report_command(src: Source, inputs: str, out_dir: str, metrics: str) -> str:
    """`inputs`: the merged files (Snakemake), or for DVC `--experiment params.yaml`: exactly
    the sweep's and models' files, which DVC's templating cannot list."""
    return (
        f"l1cert report {inputs} {_options(src, 'report')} --out-dir {src.path(out_dir)} "
        f"--metrics {src.path(metrics)}"
    )


def entry_options(entry: dict) -> str:
    """A `models:` entry as options (--name ... --path ...), as DVC's `${item}` writes it."""
    return " ".join(f"--{key} {shlex.quote(str(value))}" for key, value in entry.items())


# --- the experiment's models -----------------------------------------------------------------


def trained_names(sweep: dict) -> list[str]:
    """The sweep's models, <noise>-<training>-s<sigma>, sigma as Python writes the params value
    (0.5, 1.0, 2): the text DVC's ${item.sigma} gives, so both engines agree on paths."""
    return [
        TRAINED.format(noise=n, training=t, sigma=s)
        for n in sweep["noises"] for t in sweep["trainings"] for s in sweep["sigmas"]
    ]  # fmt: skip


def model_noises(params: dict) -> dict[str, str]:
    """{model name: its noise} of every model of an experiment, the sweep's and the imported
    ones (named by their entry)."""
    sweep = params["sweep"]
    found = {
        TRAINED.format(noise=n, training=t, sigma=s): n
        for n in sweep["noises"] for t in sweep["trainings"] for s in sweep["sigmas"]
    }  # fmt: skip
    found.update({e["name"]: e["noise"] for e in params.get("models") or []})
    return found


def model_names(params: dict) -> list[str]:
    return list(model_noises(params))


def merged_files(params_path: str | Path, root: str | Path = "results/certify") -> list[Path]:
    """The merged certify file of every model of the experiment in `params_path`; one line
    naming the first that is missing."""
    import yaml

    from l1cert.utils import L1CertError

    try:
        params = yaml.safe_load(Path(params_path).read_text())
        dataset, names = params["dataset"], model_names(params)
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise L1CertError(f"--experiment {params_path}: not an experiment ({err})") from None
    files = [Path(root) / str(dataset) / f"{name}.tsv" for name in names]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise L1CertError(
            f"--experiment {params_path}: {missing[0]} is missing (with DVC: after changing "
            "sweep.noises, sweep.trainings or certify.sampling, rerun `l1cert dvc-yaml`)"
        )
    return files


def code_deps(stage: str, absolute: bool = False) -> list[str]:
    """The source files that decide a stage's results, as paths from the project root (DVC's
    deps live in the repository), or `absolute`: the files of the l1cert that runs
    (Snakemake's, wherever the workflow is)."""
    root = PACKAGE_DIR.parents[1]
    files = [module_file(m) for m in stage_code(stage)]
    return [str(f) if absolute else str(f.relative_to(root)) for f in files]
