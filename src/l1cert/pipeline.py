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
settings, an exact noise none of the sampling ones); dvc.yaml names the grid's noises and
trainings, its σ come from params.yaml. Torch-free: Snakemake imports it to build its DAG.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from l1cert.config import CertifyConfig, DataConfig, ReportConfig, TrainConfig
from l1cert.fields import params_decisions
from l1cert.layout import (
    HEADLINE,
    MANIFEST,
    MODEL_DIR,
    TRAINED,
    expected_outputs,
    plot_outputs,
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
    the grid's and models' files, which DVC's templating cannot list."""
    return (
        f"l1cert report {inputs} {_options(src, 'report')} --out-dir {src.path(out_dir)} "
        f"--metrics {src.path(metrics)}"
    )


def entry_options(entry: dict) -> str:
    """A `models:` entry as options (--name ... --path ...), as DVC's `${item}` writes it."""
    return " ".join(f"--{key} {shlex.quote(str(value))}" for key, value in entry.items())


# --- the experiment's models -----------------------------------------------------------------


def trained_names(grid: dict) -> list[str]:
    """The grid's models, <noise>-<training>-s<sigma>, sigma as Python writes the params value
    (0.5, 1.0, 2): the text DVC's ${item.sigma} gives, so both engines agree on paths."""
    return [
        TRAINED.format(noise=n, training=t, sigma=s)
        for n in grid["noises"] for t in grid["trainings"] for s in grid["sigmas"]
    ]  # fmt: skip


def model_noises(params: dict) -> dict[str, str]:
    """{model name: its noise} of every model of an experiment, the grid's and the imported
    ones (named by their entry)."""
    grid = params["grid"]
    found = {
        TRAINED.format(noise=n, training=t, sigma=s): n
        for n in grid["noises"] for t in grid["trainings"] for s in grid["sigmas"]
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
            "grid.noises, grid.trainings or certify.sampling, rerun `l1cert dvc-yaml`)"
        )
    return files


def code_deps(stage: str, absolute: bool = False) -> list[str]:
    """The source files that decide a stage's results, as paths from the project root (DVC's
    deps live in the repository), or `absolute`: the files of the l1cert that runs
    (Snakemake's, wherever the workflow is)."""
    root = PACKAGE_DIR.parents[1]
    files = [module_file(m) for m in stage_code(stage)]
    return [str(f) if absolute else str(f.relative_to(root)) for f in files]


# --- dvc.yaml -------------------------------------------------------------------------------

_HEADER = """\
# Written by `l1cert dvc-yaml` from params.yaml and l1cert.pipeline, which also builds
# Snakemake's command lines: edit the pipeline there and rerun it (tests check this file is
# current). Rerun it too after changing grid.noises, grid.trainings or certify.sampling: stages
# are grouped by what decides their results (a type2 training has its own settings; an exact
# noise takes none of the sampling ones), so the grid's noises and trainings are written here;
# its sigmas and everything else come from params.yaml.
# Each command names, as ${...}, the settings that decide its result: its params, so editing
# one reruns the stage. Run-only settings (certify.batch, resources.certify.threads, data.root,
# train.workers) are read from params.yaml when the stage runs (--run-params): editing them
# reruns nothing. Each stage's code deps are the modules that decide its numbers.
# A certify shard grows in partial/ (ignored by DVC, see .dvcignore) and is moved onto its
# outputs when complete.
"""


def dvc_yaml(params: dict) -> str:
    """dvc.yaml's text for the experiment whose params are `params`."""
    import yaml

    stages = _dvc_stages(Source(params, dvc=True))

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):  # write each matrix out, no &id anchors
            return True

    def string(dumper, text):
        style = ">" if len(text) > 90 and "\n" not in text else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)

    Dumper.add_representer(str, string)
    body = yaml.dump({"stages": stages}, Dumper=Dumper, sort_keys=False, width=96)
    return _HEADER + "\n" + body


def _groups(values, keys_of) -> list[tuple[str, list]]:
    """`values` grouped by the params list `keys_of(value)` gives, in order: (name suffix,
    members); the largest group (the first among equals) has no suffix."""
    groups: dict[tuple, list] = {}
    for value in values:
        groups.setdefault(tuple(keys_of(value)), []).append(value)
    members = list(groups.values())
    largest = max(members, key=len) if members else []
    return [("" if m is largest else "_" + "_".join(m), m) for m in members]


def _dvc_stages(src: Source) -> dict:
    config = src.config
    grid, dataset = config["grid"], "${dataset}"
    manifest = MANIFEST.format(dataset=dataset)
    trained = TRAINED.format(noise="${item.noise}", training="${item.training}",
                             sigma="${item.sigma}")  # fmt: skip
    stages = {
        "data": {
            "desc": "Fetch or verify the dataset and write its manifest.",
            "cmd": data_command(src, manifest),
            "deps": code_deps("data"),
            "params": list(decides(config, "data")),
            "outs": [manifest],
        }
    }
    train_keys = lambda t: decides(config, "train", training=t)  # noqa: E731
    for suffix, trainings in _groups(grid["trainings"], train_keys):
        out = f"results/models/{dataset}/{trained}"
        stages["train" + suffix] = {
            "desc": f"Train a base classifier per noise and sigma ({', '.join(trainings)}).",
            "matrix": {
                "noise": list(grid["noises"]),
                "training": trainings,
                "sigma": "${grid.sigmas}",
            },  # fmt: skip
            "cmd": train_command(
                src, "${item.noise}", "${item.sigma}", trainings[0], out, "${item.training}"
            ),
            "deps": [manifest, *code_deps("train")],
            "params": list(decides(config, "train", training=trainings[0])),
            "outs": [f"{out}/{f}" for f in TRAIN_OUTS],
        }
    imported = config.get("models") or []
    noises = list(grid["noises"])
    for suffix, members in _groups(noises, lambda n: decides(config, "certify", noise=n)):
        matrix = {"noise": members, "training": list(grid["trainings"]),
                  "sigma": "${grid.sigmas}"}  # fmt: skip
        stages["certify" + suffix] = _certify_stage(src, trained, matrix, members[0])
    if imported:
        matrix = {"model": "${models}"}
        stages["certify_imported"] = _certify_stage(src, "${item.model.name}", matrix,
                                                    imported[0]["noise"])  # fmt: skip
    merge = _merge_stage(src, trained)
    stages["merge"] = {
        "matrix": {
            "noise": noises,
            "training": list(grid["trainings"]),
            "sigma": "${grid.sigmas}",
        },  # fmt: skip
        **merge,
    }
    if imported:
        name = "${item.name}"
        model = f"{MODEL_DIR.format(dataset=dataset, model=name)}/model.pt"
        stages["import_model"] = {
            "foreach": "${models}",
            "do": {
                "desc": "Convert a released checkpoint into an l1cert model.",
                "cmd": import_command(src, "${item}", dataset, model),
                "deps": ["${item.path}", *code_deps("import")],
                "outs": [model],
            },
        }
        stages["merge_imported"] = {"foreach": "${models}", "do": _merge_stage(src, name)}
    report_files = [str(p) for p in expected_outputs("results", [dataset])]
    plots = [str(p) for p in plot_outputs("results", [dataset])]
    metrics = "results/metrics.json"
    headline = [f for f in report_files if Path(f).parent == Path("results", HEADLINE)]
    stages["report"] = {
        "desc": "Tables, figures, captions, plot data and metrics from the merged certificates.",
        "cmd": report_command(src, f"--experiment {PARAMS}", "results", metrics),
        "deps": [f"results/certify/{dataset}", *code_deps("report")],
        "params": ["dataset", "grid", "models", *decides(config, "report")],
        "outs": [f for f in report_files if f not in plots and f not in headline],
        "plots": [_plot(p) for p in plots],
        "metrics": headline,  # a file per bound: a row each in `dvc metrics show`
    }
    return stages


def _certify_stage(src: Source, model: str, matrix: dict, noise: str) -> dict:
    dataset = "${dataset}"
    shards_k = "${certify.shards[-1]}"
    folder = f"results/certify/{dataset}/{model}"
    out = f"{folder}/shard-${{item.shard}}-of-{shards_k}.tsv"
    model_file = f"{MODEL_DIR.format(dataset=dataset, model=model)}/model.pt"
    return {
        "desc": "Certify one shard of a model's test points.",
        "matrix": {**matrix, "shard": "${certify.shards}"},
        "cmd": certify_command(src, model_file, noise, f"${{item.shard}}/{shards_k}", out),
        "deps": [MANIFEST.format(dataset=dataset), model_file, *code_deps("certify")],
        "params": list(decides(src.config, "certify", noise=noise)),
        "outs": [out, out.removesuffix(".tsv") + ".json"],
    }


def _merge_stage(src: Source, model: str) -> dict:
    folder = f"results/certify/${{dataset}}/{model}"
    shards = f"{folder}/shard-*-of-${{certify.shards[-1]}}.tsv"
    return {
        "desc": "Merge a model's certify shards into one file.",
        "cmd": merge_command(src, shards, f"{folder}.tsv"),
        "deps": [folder, *code_deps("merge")],
        "outs": [f"{folder}.tsv", f"{folder}.json"],
    }


def _plot(path: str):
    """A figure is shown as it is; the long plot data draws one curve per model, a panel per
    training and bound (workflow/plots/by-model.json)."""
    if not path.endswith(".csv"):
        return path
    props = {"x": "radius", "y": "certified_accuracy", "template": PLOT_TEMPLATE}
    return {path: props}


PLOT_TEMPLATE = "workflow/plots/by-model.json"


def write_dvc_yaml(params_path: str | Path, out: str | Path) -> Path:
    """Write dvc.yaml for the params file at `params_path` (atomically)."""
    import yaml

    from l1cert.utils import L1CertError, atomic_write_text

    try:
        params = yaml.safe_load(Path(params_path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise L1CertError(f"cannot read {params_path}: {err}") from None
    atomic_write_text(out, dvc_yaml(params))
    return Path(out)
