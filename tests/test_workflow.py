"""The Snakemake workflow over params.yaml: the schema and what every job would refuse, the
DAG (dry runs, the SLURM profile, lint), the same outputs as DVC's stages, and bad input ending
in one line in the job's log. Runs of the pipeline for real: test_engines.py."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from conftest import (
    ENV,
    IMPORTED,
    PROFILE,
    ROOT,
    dvc_outputs,
    make_project,
    params,
    reduced_params,
    run,
    snakemake_outputs,
)
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from l1cert import dvc_stages, schema

SCHEMA = schema.params_schema_file(ROOT / "workflow" / "schemas" / "params.schema.yaml")


# --- the schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "params.yaml",
        "config/paper-cifar10.yaml",
        "config/paper-imagenet.yaml",
        "config/dssn-cifar10.yaml",
        "config/digits-training.yaml",
        "config/training-cifar10.yaml",
    ],
)
def test_shipped_configs_are_valid(name):
    """Each as Snakemake reads it: a configfile overlaid on params.yaml, key by key."""

    def overlay(base: dict, top: dict) -> dict:
        merged = dict(base)
        for key, value in top.items():
            both = isinstance(value, dict) and isinstance(base.get(key), dict)
            merged[key] = overlay(base[key], value) if both else value
        return merged

    config = yaml.safe_load((ROOT / name).read_text())
    validate(overlay(yaml.safe_load((ROOT / "params.yaml").read_text()), config), SCHEMA)


def _set(config, dotted, value):
    *parents, last = dotted.split(".")
    for key in parents:
        config = config[key]
    config[last] = value


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("train.epochz", 3, "'epochz' was unexpected"),
        ("datset", "digits", "'datset' was unexpected"),
        ("sweep.noises", ["laplace", "poisson"], "['sweep']['noises'][1]"),
        ("sweep.sigmas", [0.25, 0.0], "['sweep']['sigmas'][1]"),
        ("sweep.sigmas", [-1.0], "['sweep']['sigmas'][0]"),
        ("certify.shards", [], "['certify']['shards']"),
        ("certify.shards", [0, 1], "['certify']['shards'][0]"),
        ("certify.alpha", 1.5, "['certify']['alpha']"),
        ("models", [{**IMPORTED, "format": "timm"}], "['models'][0]['format']"),
        ("models", [{**IMPORTED, "sigma": 0}], "['models'][0]['sigma']"),
        ("models", [{**IMPORTED, "name": "../up"}], "['models'][0]['name']"),
        ("models", [{**IMPORTED, "weights": "x"}], "'weights' was unexpected"),
        ("models", [{k: v for k, v in IMPORTED.items() if k != "noise"}], "'noise' is a required"),
        # what a job would refuse hours later (sequential needs n >= its first round of 100)
        ("certify.n", 50, "['certify']['n']"),
        ("certify.batch", 10**12, "['certify']['batch']"),
        ("train.workers", 100_000_000, "['train']['workers']"),
        ("train.lr", 1e308, "['train']['lr']"),
        ("train.seed", 2**64, "['train']['seed']"),
        ("train.type2.epsilon", 1e308, "['train']['type2']['epsilon']"),
        ("sweep.sigmas", [1e308], "['sweep']['sigmas'][0]"),
        ("train.type2.samples", 10**9, "['train']['type2']['samples']"),
        ("resources.train.threads", 10**8, "['resources']['train']['threads']"),
        ("certify.max", 0, "['certify']['max']"),
        ("models", [{**IMPORTED, "noise": "dssn"}], "['models'][0]['noise']"),
    ],
)
def test_schema_errors_name_the_key(key, value, expected):
    config = params()
    _set(config, key, value)
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA)
    assert expected in str(err.value)


def test_bad_config_stops_the_workflow_before_any_job(tmp_path):
    project = make_project(tmp_path / "project")
    (project / "bad.yaml").write_text("sweep:\n  noises: [laplace, poisson]\n")
    result = run(["snakemake", *PROFILE, "--configfile", "bad.yaml"], project, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Error validating config file" in output
    assert "'poisson' is not one of" in output and "['sweep']['noises'][1]" in output
    assert not (project / "results").exists() and not (project / "logs").exists()

    (project / "bad.yaml").write_text("certify:\n  shards: [1, 3]\n")
    result = run(["snakemake", "-n", "--configfile", "bad.yaml"], project, check=False)
    assert result.returncode != 0
    assert "certify.shards must list the shard numbers 1..K" in result.stdout + result.stderr


def test_snakemake_config_overrides_reach_the_schema_as_numbers(tmp_path):
    project = make_project(tmp_path / "project")
    grid = 'sweep={"sigmas": [0.5, 0.75]}'
    outputs = snakemake_outputs(project, "--config", grid, "certify={'n': 500}")
    models = {o.split("/")[3] for o in outputs if o.startswith("results/models/")}
    assert models == {f"{n}-{t}-s{s}" for n in params()["sweep"]["noises"]
                      for t in ("type1", "type2") for s in (0.5, 0.75)}  # fmt: skip


@pytest.mark.parametrize(
    "changes, message",
    [
        ('report:\n  radii: "0,1,1"\n', "report.radii: --radii must be increasing"),
        ('report:\n  radii: "0,1' + "0" * 400 + '"\n', "report.radii: --radii must be increasing"),
        ('report:\n  radii: "0,a"\n', "report.radii: --radii must be comma-separated numbers"),
        ("train:\n  workers: 64\n", "train.workers: --workers 64 exceeds this machine's"),
        ("sweep:\n  sigmas: [0.03]\n", "sweep.sigmas: dssn noise: sigma=0.03 on the grid q=16"),
    ],
)
def test_what_every_job_would_refuse_stops_the_dry_run(tmp_path, changes, message):
    project = make_project(tmp_path / "project")
    (project / "bad.yaml").write_text(changes)
    result = run(["snakemake", "-n", "--configfile", "bad.yaml"], project, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr


@pytest.mark.parametrize(
    "models, message",
    [
        (
            [{**IMPORTED, "name": "laplace-type1-s0.25"}],
            "laplace-type1-s0.25 is the name of a sweep",
        ),
        ([IMPORTED, {**IMPORTED, "noise": "gaussian"}], "two entries have the same name"),
    ],
)
def test_imported_model_names_must_be_unique(tmp_path, models, message):
    project = make_project(
        tmp_path / "project", {**params(), "dataset": "cifar10", "models": models}
    )
    result = run(["snakemake", "-n"], project, check=False)
    assert result.returncode != 0 and message in result.stdout + result.stderr


# --- the DAG ------------------------------------------------------------------------------


def _models(config):
    g = config["sweep"]
    grid = [f"{n}-{t}-s{s}" for n in g["noises"] for t in g["trainings"] for s in g["sigmas"]]
    return grid + [entry["name"] for entry in config.get("models", [])]


@pytest.mark.parametrize(
    "configfile",
    [
        None,
        "config/paper-cifar10.yaml",
        "config/paper-imagenet.yaml",
        "config/dssn-cifar10.yaml",
        "config/training-cifar10.yaml",
    ],
)
def test_dry_run_lists_the_full_grid(tmp_path, configfile):
    project = make_project(tmp_path / "project")
    config = yaml.safe_load((ROOT / (configfile or "params.yaml")).read_text())
    # the paper grids are for a cluster: planned as the slurm profile plans them
    cluster = ["--configfile", configfile, "--profile", "workflow/profiles/slurm"]
    outputs = snakemake_outputs(project, *(cluster if configfile else []))
    dataset, shards = config["dataset"], len(config["certify"]["shards"])
    models = _models(config)
    assert (
        len(models)
        == {
            None: 32,
            "config/paper-cifar10.yaml": 16,
            "config/paper-imagenet.yaml": 6,
            "config/dssn-cifar10.yaml": 8,
            "config/training-cifar10.yaml": 32,
        }[configfile]
    )
    for model in models:
        assert f"results/models/{dataset}/{model}/model.pt" in outputs
        assert f"results/certify/{dataset}/{model}.tsv" in outputs
        for k in range(1, shards + 1):
            assert f"results/certify/{dataset}/{model}/shard-{k}-of-{shards}.tsv" in outputs
    shard_files = [o for o in outputs if "/shard-" in o and o.endswith(".tsv")]
    assert len(shard_files) == len(models) * shards
    assert f"results/figures/{dataset}-certified-accuracy.png" in outputs
    assert "results/metrics.json" in outputs


def test_the_slurm_profile_asks_for_the_gpus_the_experiment_gives(tmp_path):
    """A CPU partition needs no profile edit: `resources.<rule>.gpu` reaches sbatch as is."""
    project = make_project(tmp_path / "project")
    cpu_training = 'resources={"train": {"threads": 1, "gpu": 0, "runtime": 30, "mem_mb": 2000}}'
    result = run(["snakemake", "-n", "--profile", "workflow/profiles/slurm", "--config",
                  cpu_training], project)  # fmt: skip
    planned = {}  # rule -> the gpu resource of its jobs
    for block in result.stdout.split("\n\n"):
        rule = re.search(r"^(?:localrule|rule) (\w+):", block, re.M)
        gpu = re.search(r"resources: .*\bgpu=(\d+)", block)
        if rule and gpu:
            planned.setdefault(rule.group(1), set()).add(int(gpu.group(1)))
    assert planned == {"train": {0}, "certify": {1}}, result.stdout[-2000:]


def test_parsing_the_snakefile_imports_neither_torch_nor_matplotlib(tmp_path):
    """Planning stays quick: the Snakefile and rules/common.smk import the torch-free modules
    only (Python's import log of a real `snakemake --list-rules`)."""
    project = make_project(tmp_path / "project")
    result = run(["snakemake", "--list-rules"], project,
                 env={**ENV, "PYTHONPROFILEIMPORTTIME": "1"})  # fmt: skip
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "l1cert.pipeline" in imported and "l1cert.layout" in imported  # the log is real
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "matplotlib"))
    assert not heavy, heavy[:5]


def test_set_scatter_overrides_the_shards(tmp_path):
    project = make_project(tmp_path / "project")
    outputs = snakemake_outputs(project, "--set-scatter", "certify=3")
    shards = {o.rsplit("/", 1)[1] for o in outputs if "/shard-" in o}
    assert shards == {f"shard-{k}-of-3.{ext}" for k in (1, 2, 3) for ext in ("tsv", "json")}


def test_lint_is_clean():
    result = run(["snakemake", "--lint", "json", "--directory", str(ROOT)], ROOT)
    lints = json.loads(result.stdout) if result.stdout.strip() else {}
    assert not any(lints.get(kind) for kind in ("snakefiles", "rules")), lints
    assert "good condition" in result.stderr


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "sweep": {
                "noises": ["uniform", "laplace"],
                "trainings": ["type2"],
                "sigmas": [0.5, 1.0, 2, 0.125],
            }
        },
        {"dataset": "cifar10", "models": [IMPORTED]},
    ],
)
def test_snakemake_and_dvc_declare_the_same_outputs(tmp_path, changes):
    config = {**params(), **changes}
    if changes:
        config["certify"] = {**config["certify"], "shards": [1, 2, 3]}
    project = make_project(tmp_path / "project", config)
    (project / IMPORTED["path"]).parent.mkdir()
    (project / IMPORTED["path"]).touch()  # an input of the import rule, which --summary wants
    ours, theirs = snakemake_outputs(project), dvc_outputs(project)
    # Snakemake's own record of its jobs (benchmark files, their summary) is its alone
    assert {p for p in ours if p.startswith("logs/benchmarks/")}
    assert {p for p in ours if not p.startswith("logs/")} == theirs
    model_dirs = {p.split("/")[3] for p in ours if p.startswith("results/models/")}
    assert model_dirs == set(_models(config))
    merged = {p for p in ours if p.startswith("results/certify/") and p.count("/") == 3}
    assert merged == {
        f"results/certify/{config['dataset']}/{m}.{ext}"
        for m in _models(config)
        for ext in ("tsv", "json")
    }


# --- bad input ----------------------------------------------------------------------------


def _failing_data_rule(tmp_path, config_changes, env=None):
    config = reduced_params()
    config.update(config_changes)
    project = make_project(tmp_path / "project", config)
    result = run(["snakemake", *PROFILE], project, check=False, env=env)
    assert result.returncode != 0
    log = (project / f"logs/data/{config['dataset']}.log").read_text()
    assert f"logs/data/{config['dataset']}.log" in result.stderr  # the log is named
    return log


@pytest.mark.slow
def test_a_missing_dataset_ends_with_the_cause_in_the_log(tmp_path):
    log = _failing_data_rule(
        tmp_path, {"dataset": "imagefolder", "data": {"root": "nowhere", "image_size": 8}}
    )
    assert "l1cert: error:" in log and "nowhere/imagefolder" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_an_unreachable_download_ends_with_the_cause_in_the_log(tmp_path):
    # A proxy nobody listens on: the download fails at once, with or without internet.
    proxy = "http://127.0.0.1:9"
    env = {
        **ENV,
        "http_proxy": proxy,
        "https_proxy": proxy,
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        "no_proxy": "",
        "NO_PROXY": "",
    }
    log = _failing_data_rule(tmp_path, {"dataset": "cifar10"}, env=env)
    assert "l1cert: error: CIFAR-10 could not be downloaded" in log
    assert "Traceback" not in log


def test_dvc_stages_depend_on_the_code_that_decides_them():
    from l1cert.provenance import module_file, stage_code

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    config = {**params(), "dataset": "cifar10", "models": [IMPORTED]}
    stages |= yaml.safe_load(dvc_stages.dvc_yaml(config))["stages"]
    assert {"import_model", "certify_imported", "merge_imported"} <= stages.keys()
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage's body
        words = stage["cmd"].split()  # "l1cert --log FILE <command> ...": the stage it runs
        assert words[1] == "--log" and words[2].startswith("logs/"), stage["cmd"]
        command = words[3]
        code = {d for d in stage["deps"] if d.startswith("src/")}
        needed = {str(module_file(m).relative_to(ROOT)) for m in stage_code(command)}
        assert code == needed, f"stage {name}: missing {needed - code}, extra {code - needed}"


# --- DVC experiments -------------------------------------------------------------------------
