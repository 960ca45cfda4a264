"""The pipeline: the Snakemake workflow and the DVC stages over the same params.yaml.

Fast checks (schema, dry runs, lint, Snakemake-vs-DVC outputs) run on copies of the project;
the slow ones run a reduced experiment for real: through Snakemake's default profile, through
`dvc repro` in a fresh clone, and through the team-sharing path (dvc push, a fresh clone,
dvc pull, snakemake --touch).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import read_table, without_time
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from l1cert import dvc_stages, schema
from l1cert.layout import all_bounds

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = schema.params_schema_file(ROOT / "workflow" / "schemas" / "params.schema.yaml")
# What a clone of the project holds that the pipeline needs (src/ for DVC's code deps).
PROJECT_FILES = [
    "Snakefile",
    "dvc.yaml",
    "params.yaml",
    "pyproject.toml",
    ".gitignore",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "config",
    "workflow",
    "src",
]
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "l1cert tests",
    "GIT_AUTHOR_EMAIL": "tests@l1cert.invalid",
    "GIT_COMMITTER_NAME": "l1cert tests",
    "GIT_COMMITTER_EMAIL": "tests@l1cert.invalid",
}
PROFILE = ["--profile", "workflow/profiles/default", "--cores", "2"]


# A released checkpoint certified beside the sweep.
IMPORTED = {
    "name": "cohen-laplace-s0.25",
    "path": "checkpoints/resnet20.pth.tar",
    "format": "cohen",
    "noise": "laplace",
    "sigma": 0.25,
    "training": "type1",
}


def run(args, cwd, check=True, env=None, timeout=600):
    result = subprocess.run(
        args, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def params():
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def make_project(path: Path, config: dict | None = None) -> Path:
    """A git repository holding the project's files, with `config` as its params.yaml."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(
                source, path / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    if config is not None:  # and its dvc.yaml, as `l1cert dvc-yaml` writes it
        (path / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (path / "dvc.yaml").write_text(dvc_stages.dvc_yaml(config))
    run(["git", "init", "-q", "-b", "main"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-qm", "project"], path)
    return path


def snakemake_outputs(project: Path, *args: str) -> set[str]:
    """Every output file of the DAG, from `snakemake --summary` (no job runs)."""
    out = run(["snakemake", "--summary", *args], project).stdout
    rows = list(csv.reader(out.splitlines(), delimiter="\t"))
    assert rows[0][0] == "output_file"
    return {row[0] for row in rows[1:]}


def dvc_outputs(project: Path) -> set[str]:
    """Every output of every stage, as DVC itself renders dvc.yaml over params.yaml."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {
            os.path.relpath(out.fs_path, project)
            for stage in repo.index.stages
            for out in stage.outs
        }


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
    assert ours == theirs
    model_dirs = {p.split("/")[3] for p in ours if p.startswith("results/models/")}
    assert model_dirs == set(_models(config))
    merged = {p for p in ours if p.startswith("results/certify/") and p.count("/") == 3}
    assert merged == {
        f"results/certify/{config['dataset']}/{m}.{ext}"
        for m in _models(config)
        for ext in ("tsv", "json")
    }


# --- real runs of a reduced experiment ----------------------------------------------------


def reduced_params() -> dict:
    config = params()
    config["sweep"] = {"noises": ["laplace"], "trainings": ["type2"], "sigmas": [0.5]}
    config["train"].update(epochs=2, lr_step=1)
    config["train"]["type2"]["warmup_epochs"] = 1
    config["certify"].update(n=200, skip=3, shards=[1, 2])
    config["report"]["radii"] = "0,0.25,0.5"
    return config


MODEL = "laplace-type2-s0.5"
MERGED = f"results/certify/digits/{MODEL}.tsv"


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """A project copy with the reduced experiment run by `snakemake --profile ...default`."""
    project = make_project(tmp_path_factory.mktemp("local") / "project", reduced_params())
    commit = run(["git", "rev-parse", "HEAD"], project).stdout.strip()
    run(["snakemake", *PROFILE], project)
    return project, commit


@pytest.mark.slow
def test_local_run_makes_real_results(local_run):
    project, _ = local_run
    manifest = json.loads((project / "results/data/digits.json").read_text())
    test_images = manifest["splits"]["test"]["images"]
    rows = read_table(project / MERGED)
    assert [int(r["idx"]) for r in rows] == list(range(0, test_images, 3))
    assert {r["noise"] for r in rows} == {"laplace"}
    assert {r["n"] for r in rows} <= {"100", "200"}  # sequential: the looks up to the cap
    assert all(float(r["radius"]) >= 0 for r in rows)
    assert sum(int(r["correct"]) for r in rows) > len(rows) / 2  # a trained model, not chance
    merged = json.loads((project / MERGED.replace(".tsv", ".json")).read_text())["result"]
    assert merged["noise"] == "laplace" and merged["sigma"] == 0.5
    assert merged["sampling"] == "sequential" and merged["looks"] == [100, 200]

    metrics = json.loads((project / "results/metrics.json").read_text())
    assert f"digits/{MODEL}/teng" in metrics
    for entry in metrics.values():
        values = [entry["clean_accuracy"], *entry["certified_accuracy"].values()]
        assert all(0 <= v <= 1 for v in values)
        assert values[1:] == sorted(values[1:], reverse=True)  # falls as the radius grows
    log = (project / f"results/models/digits/{MODEL}/train-log.csv").read_text().splitlines()
    assert len(log) == 1 + 2  # header and one row per epoch
    assert not (project / f"results/models/digits/{MODEL}/checkpoint-last.pt").exists()
    assert (project / "results/figures/digits-certified-accuracy.png").stat().st_size > 1000

    done = run(["snakemake", "-n", *PROFILE], project)
    assert "Nothing to be done" in done.stdout + done.stderr


@pytest.mark.slow
def test_report_views_for_snakemake_and_dvc(local_run, tmp_path):
    project, _ = local_run
    html = tmp_path / "report.html"
    run(["snakemake", "--report", str(html)], project)
    text = html.read_text()
    for caption in (project / "results/captions").glob("*.rst"):
        first_words = " ".join(caption.read_text().split()[:4])
        assert first_words in text, f"caption {caption.name} missing from the HTML report"
    assert "digits-certified-accuracy.png" in text and "certified-accuracy.csv" in text
    # the landing page describes the results, from their files
    for fact in ("digits", "laplace", "sampling: sequential", "n: 200", "alpha: 0.001",
                 "code digest"):  # fmt: skip
        assert fact in text, fact
    assert "not made by this experiment" not in text and "the config says" not in text
    edited = tmp_path / "edited.yaml"
    edited.write_text("certify:\n  n: 300\n")
    run(["snakemake", "--report", str(tmp_path / "edited.html"), "--configfile", str(edited)],
        project)  # fmt: skip
    text = (tmp_path / "edited.html").read_text()
    assert "certify.n: the config says 300" in text and "certified with 200" in text
    (project / "results/certify/digits/stray-model.tsv").write_text("idx\n")
    stray = tmp_path / "stray.html"
    run(["snakemake", "--report", str(stray)], project)
    assert "not made by this experiment" in stray.read_text()
    assert "stray-model.tsv" in stray.read_text()
    (project / "results/certify/digits/stray-model.tsv").unlink()

    # DVC's metric is the headline, a file per bound (a row each); the full summary's cost is
    # the certify rows' sums
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], project).stdout)[""]["data"]
    assert set(shown) == {f"results/summary/{b}.json" for b in all_bounds()}
    headline = {path: found.get("data", {}) for path, found in shown.items()}
    present = {b for b in all_bounds() if headline[f"results/summary/{b}.json"]}
    assert present == {"teng", "lecuyer", "teng_multiclass"}
    assert headline["results/summary/teng.json"]["type2"].keys() == {"acr", "acc@0.5", "passes"}
    width = max(map(len, run(["dvc", "metrics", "show"], project).stdout.splitlines()))
    assert width <= 250
    summary = json.loads((project / "results/summary-full.json").read_text())
    rows = read_table(project / MERGED)
    teng = summary["type2/teng"]
    assert teng["passes_total"] == sum(int(r["n0"]) + int(r["n"]) for r in rows)
    assert headline["results/summary/teng.json"]["type2"]["passes"] == round(teng["passes"])
    # the certify jobs' wall time, summed over shards (sequential rows' own times overlap)
    merged = json.loads((project / MERGED.replace(".tsv", ".json")).read_text())
    assert teng["certify_s"] == pytest.approx(merged["certify_seconds"], abs=0.01)
    assert 0 < merged["certify_seconds"] < sum(float(r["time"]) for r in rows)
    assert teng["train_s"] > 0 and teng["passes"] == pytest.approx(
        teng["passes_total"] / len(rows), abs=0.1
    )
    plots = run(["dvc", "plots", "show", "--json"], project).stdout
    assert "results/plots/certified-accuracy.csv" in plots and MODEL in plots


@pytest.mark.slow
def test_a_shard_cut_short_resumes_and_nothing_else_reruns(local_run):
    project, _ = local_run
    shard = project / f"results/certify/digits/{MODEL}/shard-2-of-2.tsv"
    model = project / f"results/models/digits/{MODEL}/model.pt"
    before, model_mtime = read_table(shard), model.stat().st_mtime_ns
    lines = shard.read_text().splitlines(keepends=True)
    # What a killed job leaves: its first rows and a torn line, in partial/; merge and report
    # never ran.
    partial = shard.parent / "partial"
    partial.mkdir(exist_ok=True)
    (partial / shard.name).write_text("".join(lines[:6]) + lines[6][:10])
    shutil.copy(shard.with_suffix(".json"), partial / "shard-2-of-2.json")
    for path in (
        shard,
        shard.with_suffix(".json"),
        project / MERGED,
        project / MERGED.replace(".tsv", ".json"),
        project / "results/metrics.json",
    ):
        path.unlink()

    run(["snakemake", *PROFILE], project)
    after = read_table(shard)
    assert without_time(after) == without_time(before)
    assert [r["time"] for r in after[:5]] == [r["time"] for r in before[:5]]  # kept, not redone
    assert model.stat().st_mtime_ns == model_mtime
    assert {p.suffix for p in partial.iterdir()} == {".lock"}  # rows moved out, the locks stay
    assert without_time(read_table(project / MERGED))[-1] == without_time(before)[-1]


@pytest.mark.slow
def test_dvc_repro_gives_the_same_certificates(local_run, tmp_path):
    project, commit = local_run
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    run(["git", "checkout", "-q", commit], clone)
    run(["dvc", "repro"], clone)
    for name in (MERGED, f"results/certify/digits/{MODEL}/shard-1-of-2.tsv"):
        assert without_time(read_table(clone / name)) == without_time(read_table(project / name))
    assert json.loads((clone / "results/metrics.json").read_text()) == json.loads(
        (project / "results/metrics.json").read_text()
    )
    assert "up to date" in run(["dvc", "status"], clone).stdout
    assert "up to date" in run(["dvc", "repro"], clone).stdout  # nothing reruns


@pytest.mark.slow
def test_results_are_shared_through_a_dvc_remote(local_run, tmp_path):
    project, _ = local_run
    remote = tmp_path / "remote"
    # The team member who ran the pipeline records and pushes the results ...
    run(["dvc", "commit", "--force"], project)
    run(["dvc", "remote", "add", "--default", "shared", str(remote)], project)
    run(["git", "add", "dvc.lock", ".dvc/config"], project)
    run(["git", "commit", "-qm", "results"], project)
    run(["dvc", "push"], project)
    assert "up to date" in run(["dvc", "status"], project).stdout

    # ... and a colleague's fresh clone pulls them and has nothing left to compute.
    clone = tmp_path / "colleague"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "results").exists()
    run(["dvc", "pull"], clone)
    assert read_table(clone / MERGED) == read_table(project / MERGED)
    run(["snakemake", "--touch", "--cores", "1"], clone)
    done = run(["snakemake", "-n", *PROFILE], clone)
    assert "Nothing to be done" in done.stdout + done.stderr
    assert "up to date" in run(["dvc", "status"], clone).stdout


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
        command = stage["cmd"].split()[1]  # "l1cert <command> ...": the stage it runs
        code = {d for d in stage["deps"] if d.startswith("src/")}
        needed = {str(module_file(m).relative_to(ROOT)) for m in stage_code(command)}
        assert code == needed, f"stage {name}: missing {needed - code}, extra {code - needed}"


# --- an imported model: the DAG under both engines, the import for real -------------------


@pytest.mark.slow
def test_an_imported_model_takes_the_place_of_training(tmp_path):
    """CIFAR-10 is not at hand offline: certify, merge and report are checked as DAGs, the
    import runs for real under both engines."""
    import torch
    from test_foreign import PlainNormalize, RefCifarResNet, randomize, their_checkpoint

    from l1cert.data import CIFAR10_MEAN, CIFAR10_STD
    from l1cert.models import load_model

    name, shards = IMPORTED["name"], 2
    config = {**params(), "dataset": "cifar10", "models": [IMPORTED]}
    config["sweep"] = {"noises": ["gaussian"], "trainings": ["type1"], "sigmas": [0.25]}
    config["certify"] = {**config["certify"], "shards": list(range(1, shards + 1))}
    project = make_project(tmp_path / "project", config)
    source = torch.nn.Sequential(
        PlainNormalize(CIFAR10_MEAN, CIFAR10_STD), randomize(RefCifarResNet(20), seed=0)
    ).eval()
    (project / "checkpoints").mkdir()
    their_checkpoint(project / IMPORTED["path"], source, "cifar_resnet20")

    # Snakemake: import -> certify (K shards) -> merge, no training; the report reads it.
    merged = f"results/certify/cifar10/{name}.tsv"
    dry = run(["snakemake", "-n", merged], project).stdout
    stats = dry[dry.index("Job stats:") :].split("\n\n")[0]
    jobs = dict(line.split() for line in stats.splitlines()[3:])
    assert jobs == {
        "data": "1",
        "import_model": "1",
        "certify": str(shards),
        "merge": "1",
        "total": str(3 + shards),
    }, stats
    dry = run(["snakemake", "-n", "-p"], project)
    report = [line for line in (dry.stdout + dry.stderr).splitlines() if "l1cert report" in line]
    assert len(report) == 1 and merged in report[0].split(), report

    # DVC: the same chain of stages.
    dot = run(["dvc", "dag", "--dot"], project).stdout
    edges = {
        tuple(s.strip('" ;') for s in line.split("->")) for line in dot.splitlines() if "->" in line
    }
    chain = [
        ("import_model@0", "certify_imported@model0-1"),
        ("certify_imported@model0-1", "merge_imported@0"),
        ("merge_imported@0", "report"),
    ]
    assert set(chain) <= edges, dot
    assert not any(a.startswith("train") and "imported" in b for a, b in edges)

    # The import itself, for real: Snakemake's rule, then DVC's stage, the same model.
    model_pt = project / f"results/models/cifar10/{name}/model.pt"
    run(["snakemake", "--cores", "1", str(model_pt.relative_to(project))], project)
    model, meta = load_model(model_pt)
    assert (meta["name"], meta["noise"], meta["sigma"], meta["training"]) == (
        name,
        "laplace",
        0.25,
        "type1",
    )
    assert meta["arch"] == "cifar_resnet20" and meta["source"]["format"] == "cohen"
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(model(x), source(x), atol=1e-5)
    run(["dvc", "repro", "--single-item", "import_model@0"], project)
    again, meta_again = load_model(model_pt)
    assert meta_again == meta
    with torch.no_grad():
        assert torch.equal(again(x), model(x))


# --- DVC experiments -------------------------------------------------------------------------


@pytest.mark.slow
def test_dvc_experiments_compare_fixed_and_sequential_sampling(tmp_path):
    """`dvc exp run -S` on a small grid: params.yaml changes by the value alone, and
    `dvc exp show` (the README's line) compares accuracy and cost in a few columns."""
    project = make_project(tmp_path / "project", None)
    from dvc.utils.hydra import apply_overrides  # what `dvc exp run -S` writes with

    apply_overrides(project / "params.yaml", [
        "sweep.noises=[laplace,dssn]", "sweep.trainings=[type1]", "sweep.sigmas=[0.5]",
        "train.epochs=1", "certify.skip=30", "certify.shards=[1]", "certify.n=200",
    ])  # fmt: skip
    assert "  - dssn" in (project / "params.yaml").read_text()
    run(["l1cert", "dvc-yaml"], project)  # the sweep's noises and trainings changed
    run(["dvc", "repro"], project)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline"], project)
    run(["dvc", "exp", "run", "-S", "certify.sampling=fixed", "-n", "fixed"], project)
    diff = run(["git", "diff", "-U0", "params.yaml"], project).stdout
    changed = [line for line in diff.splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]
    assert len(changed) == 2 and "sampling: fixed" in changed[1], diff
    shown = json.loads(run(["dvc", "exp", "show", "--json"], project).stdout)
    assert len(shown) >= 1
    # the README's line: every metric but the headline dropped, every changed param kept
    drop = r"^results/summary/(?!(teng|uniform)\.json:type1\.(passes|acr)$).*"
    table = run(["dvc", "exp", "show", "--only-changed", "--md", "--drop", drop],
                project).stdout  # fmt: skip
    header = table.splitlines()[0]
    assert "results/summary/teng.json:type1.passes" in header and "certify.sampling" in header
    assert "results/summary/teng.json:type2" not in header
    assert max(map(len, table.splitlines())) <= 200, table
    compared = json.loads(run(["dvc", "exp", "diff", "main", "fixed", "--json"], project).stdout)
    teng = compared["metrics"]["results/summary/teng.json"]["type1.passes"]
    assert teng["old"] < teng["new"] == 200 + 100  # sequential stopped early; fixed: n0 + n
    plots = run(["dvc", "plots", "diff", "main", "fixed", "--json"], project).stdout
    assert '"main"' in plots and '"fixed"' in plots  # both experiments' curves
