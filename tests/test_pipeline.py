"""Both engines' jobs from one declaration: the commands, what each job is rerun for, and that
Snakemake and DVC agree, edit by edit, on what an edit makes stale."""

from __future__ import annotations

import collections
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import ENV, PROFILE, ROOT, make_project, params, read_table, run

from l1cert import dvc_stages, pipeline
from l1cert.fields import from_options
from l1cert.provenance import PLUMBING, import_closure, stage_code

# --- what decides each job ---------------------------------------------------------------


def test_dssn_certify_takes_no_sampling_setting_and_a_monte_carlo_one_all():
    config = params()
    laplace = pipeline.decides(config, "certify", noise="laplace")
    dssn = pipeline.decides(config, "certify", noise="dssn")
    sampling = {"certify.n0", "certify.n", "certify.alpha", "certify.seed", "certify.sampling"}
    assert sampling | {"report.radii"} <= set(laplace)  # sequential sampling takes the radii
    assert not (sampling | {"report.radii"}) & set(dssn)
    for run_only in ("certify.batch", "resources.certify.threads", "data.root"):
        assert run_only not in laplace and run_only not in dssn
    fixed = pipeline.decides({**config, "certify": {**config["certify"], "sampling": "fixed"}},
                             "certify", noise="laplace")  # fmt: skip
    assert "report.radii" not in fixed and "certify.n" in fixed


def test_only_a_type2_training_is_decided_by_its_section():
    config = params()
    type1 = pipeline.decides(config, "train", training="type1")
    type2 = pipeline.decides(config, "train", training="type2")
    assert not any(key.startswith("train.type2.") for key in type1)
    assert {f"train.type2.{k}" for k in ("norm", "epsilon", "steps", "samples")} <= set(type2)
    assert "train.workers" not in type1 and "resources.train.threads" in type1


def _parsed(command: str, config: dict) -> tuple:
    """A job's command as the configs its `l1cert` command builds (the CLI's own way:
    options, then run-only settings from --run-params, then defaults)."""
    from l1cert.cli import COMMAND_CONFIGS
    from l1cert.fields import cli_fields

    words = shlex.split(command)
    options, run_params = {}, None
    for flag, value in zip(words[2:], [*words[3:], ""], strict=True):
        if flag.startswith("--"):
            name = flag[2:].replace("-", "_")
            if name == "run_params":
                run_params = config
            else:
                options[name] = value
    found = []
    for cls in COMMAND_CONFIGS[words[1]]:
        kinds = {n: {"int": int, "float": float}.get(str(f.type), str) for n, f in cli_fields(cls)}
        mine = {n: kinds[n](v) for n, v in options.items() if n in kinds}
        found.append(from_options(cls, mine, run_params))
    return tuple(found)


def _jobs(commands) -> dict:
    """{(command, its --out): command} of `l1cert` commands."""
    found = {}
    for command in commands:
        words = shlex.split(command)
        if words[1] == "--log":  # DVC's stages keep their log (`l1cert --log FILE`)
            words = [words[0], *words[3:]]
        pairs = zip(words, words[1:], strict=False)
        out = next((w for flag, w in pairs if flag in ("--out", "--manifest")), "")
        found[(words[1], out)] = " ".join(map(shlex.quote, words))
    return found


@pytest.mark.parametrize("sampling", ["sequential", "fixed"])
def test_both_engines_run_each_job_with_the_same_settings(tmp_path, sampling):
    """Snakemake's commands carry every value; DVC's, as DVC itself renders dvc.yaml, carry
    the deciding ones and read the rest from params.yaml (--run-params): for every data, train,
    certify and report job of the grid, both make the same configs."""
    from dvc.repo import Repo

    config = params()
    config["certify"]["sampling"] = sampling
    # values unlike the defaults, so a setting a command leaves out shows
    config["train"]["type2"].update(warmup_epochs=3, epsilon=0.1)
    config["certify"].update(seed=5, batch=300)
    config["resources"]["certify"]["threads"] = 2
    project = make_project(tmp_path / "project", config)
    with Repo(str(project)) as repo:
        theirs = _jobs(stage.cmd for stage in repo.index.stages if stage.cmd)
    src, dataset = pipeline.Source(config), config["dataset"]
    ours = [pipeline.data_command(src, f"results/data/{dataset}.json")]
    shards = config["certify"]["shards"]
    for name, noise in pipeline.model_noises(config).items():
        training = name.split("-")[1]
        sigma = name.split("-s", 1)[1]
        out = f"results/models/{dataset}/{name}"
        ours.append(pipeline.train_command(src, noise, sigma, training, out))
        for k in shards:
            shard = f"results/certify/{dataset}/{name}/shard-{k}-of-{len(shards)}.tsv"
            ours.append(pipeline.certify_command(src, f"{out}/model.pt", noise,
                                                 f"{k}/{len(shards)}", shard))  # fmt: skip
    ours = _jobs(ours)
    assert set(ours) <= set(theirs), sorted(set(ours) - set(theirs))[:3]
    for job, command in ours.items():
        assert _parsed(command, config) == _parsed(theirs[job], config), job
    report = [c for (word, _), c in theirs.items() if word == "report"]
    assert _parsed(report[0], config) == _parsed(
        pipeline.report_command(src, "x", "results", "results/metrics.json"), config
    )


def test_a_stage_s_code_is_what_decides_its_numbers():
    """Help texts, messages and checks are out: the CLI, the resume protocol, the settings'
    declaration and the re-derivation; the modules that compute certify's rows are in."""
    certify = set(stage_code("certify"))
    assert {"l1cert.bounds", "l1cert.smoothing", "l1cert.noise", "l1cert.sampling"} <= certify
    assert not certify & PLUMBING
    for stage in ("data", "train", "certify", "merge", "report", "import"):
        code = set(stage_code(stage))
        assert "l1cert.cli" not in code and "l1cert.resume" not in code, stage
        # closed under imports, but for the plumbing
        imported = {m for module in code for m in import_closure(module, PLUMBING)}
        assert imported - code <= {"l1cert"}, (stage, imported - code)


def test_the_committed_dvc_yaml_is_current():
    assert (ROOT / "dvc.yaml").read_text() == dvc_stages.dvc_yaml(params()), (
        "dvc.yaml is stale: run `l1cert dvc-yaml`"
    )


def test_dvc_stages_declare_exactly_what_decides_them():
    """Each certify and train stage's params are its jobs' deciding keys, and its command names
    each of them as ${key}; nothing run-only is in either."""
    stages = yaml.safe_load(dvc_stages.dvc_yaml(params()))["stages"]
    groups = {"certify": "laplace", "certify_dssn": "dssn"}
    for name, noise in groups.items():
        stage = stages[name]
        assert stage["matrix"]["noise"] == ([noise] if noise == "dssn" else
                                            ["laplace", "gaussian", "uniform"])  # fmt: skip
        keys = set(pipeline.decides(params(), "certify", noise=noise))
        assert set(stage["params"]) == keys
        assert {m.group(1) for m in re.finditer(r"\$\{([a-z_.]+)\}", stage["cmd"])} - {
            "dataset", "certify.shards"} <= keys | {"item.noise", "item.training", "item.sigma",
                                                    "item.shard"}  # fmt: skip
        assert "certify.batch" not in stage["cmd"] and "--run-params params.yaml" in stage["cmd"]
    assert set(stages) >= {"data", "train", "train_type2", "certify", "certify_dssn", "merge"}


# --- both engines, edit by edit ---------------------------------------------------------------


def tiny_params() -> dict:
    config = params()
    config["sweep"] = {"noises": ["laplace", "dssn"], "trainings": ["type1", "type2"],
                      "sigmas": [0.5]}  # fmt: skip
    config["train"].update(epochs=1, lr_step=1)
    config["train"]["type2"]["warmup_epochs"] = 1
    config["certify"].update(n=200, skip=40, shards=[1])
    config["report"]["radii"] = "0,0.25,0.5"
    return config


def _set(config: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    for part in parents:
        config = config[part]
    config[last] = value


def _edit_source(project: Path, module: str, old: str, new: str) -> None:
    path = project / "src" / "l1cert" / module
    text = path.read_text()
    assert old in text, (module, old)
    path.write_text(text.replace(old, new, 1))


# What the declaration says each edit reruns on the tiny grid (laplace and dssn, type1 and
# type2, one σ, one shard): Monte Carlo certify jobs are the 2 Laplace models', DSSN's are 2.
MONTE_CARLO = {"certify": 2, "merge": 2, "report": 1}
EVERYTHING = {"train": 4, "certify": 4, "merge": 4, "report": 1}
EDITS = {
    "certify.n": (("param", "certify.n", 300), MONTE_CARLO),
    "certify.alpha": (("param", "certify.alpha", 0.01), MONTE_CARLO),
    "certify.sampling": (("param", "certify.sampling", "fixed"), MONTE_CARLO),
    "report.radii": (("param", "report.radii", "0,0.3,0.5"), MONTE_CARLO),
    "train.epochs": (("param", "train.epochs", 2), EVERYTHING),
    "train.lr": (("param", "train.lr", 0.05), EVERYTHING),
    "train.type2.epsilon": (
        ("param", "train.type2.epsilon", 0.1),
        {"train": 2, "certify": 2, "merge": 2, "report": 1},
    ),
    "one sigma added": (("param", "sweep.sigmas", [0.5, 0.25]), EVERYTHING),
    "certify.batch": (("param", "certify.batch", 100), {}),
    "resources.certify.threads": (("param", "resources.certify.threads", 2), {}),
    "data.root": (("param", "data.root", "elsewhere"), {}),
    "a comment in bounds.py": (
        ("code", "bounds.py", "import numpy as np\n", "import numpy as np  # arrays\n"),
        {"certify": 4, "merge": 4, "report": 1},
    ),
    "a help text in cli.py": (("code", "cli.py", "Merged TSV", "The merged TSV"), {}),
    "a message in resume.py": (("code", "resume.py", "start afresh", "begin afresh"), {}),
}


def _snakemake_jobs(project: Path, env: dict) -> collections.Counter:
    planned = run(["snakemake", "-n"], project, env=env)
    text = planned.stdout + planned.stderr
    if "Nothing to be done" in text:
        return collections.Counter()
    stats = text[text.index("Job stats:") :].split("\n\n")[0].splitlines()[3:]
    jobs = dict(line.split() for line in stats)
    # all, and the summary of Snakemake's own job records (which follows any rerun), are not jobs
    skip = ("all", "total", "job_costs")
    return collections.Counter({k: int(v) for k, v in jobs.items() if k not in skip})


def _dvc_jobs(project: Path, env: dict) -> collections.Counter:
    """The stages `dvc repro` would run: those `dvc status` names, and every stage downstream
    of them (status compares a stage's own deps; what runs after a rerun follows from it)."""
    from dvc.repo import Repo

    status = json.loads(run(["dvc", "status", "--json"], project, env=env).stdout or "{}")
    stale = {name.split(":")[-1] for name in status}
    with Repo(str(project)) as repo:
        graph = repo.index.graph
        names = {stage: stage.addressing.split(":")[-1] for stage in graph.nodes}
        todo = [s for s, name in names.items() if name in stale]
        found = set()
        while todo:
            stage = todo.pop()
            if stage in found:
                continue
            found.add(stage)
            todo.extend(s for s in graph.predecessors(stage))  # edges point upstream
    return collections.Counter(re.split(r"[_@]", names[s])[0] for s in found)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A tiny experiment run by Snakemake (its code: the project's src/, through PYTHONPATH)
    and recorded in DVC; both engines up to date."""
    config = tiny_params()
    project = make_project(tmp_path_factory.mktemp("edits") / "project", config)
    env = {**ENV, "PYTHONPATH": str(project / "src")}
    run(["snakemake", *PROFILE], project, env=env)
    run(["dvc", "commit", "--force"], project, env=env)
    run(["git", "add", "-A"], project, env=env)
    run(["git", "commit", "-qm", "results"], project, env=env)
    assert _snakemake_jobs(project, env) == {} and _dvc_jobs(project, env) == {}
    return project, env


@pytest.mark.slow
@pytest.mark.parametrize("edit", EDITS)
def test_both_engines_rerun_what_the_declaration_says(recorded, edit):
    project, env = recorded
    change, expected = EDITS[edit]
    params_file = project / "params.yaml"
    before = params_file.read_text()
    sources = {}
    try:
        if change[0] == "param":
            config = yaml.safe_load(before)
            _set(config, change[1], change[2])
            params_file.write_text(yaml.safe_dump(config, sort_keys=False))
        else:
            path = project / "src" / "l1cert" / change[1]
            sources[path] = path.read_text()
            _edit_source(project, *change[1:])
        snakemake, dvc = _snakemake_jobs(project, env), _dvc_jobs(project, env)
        assert snakemake == dvc == collections.Counter(expected), (snakemake, dvc)
    finally:
        params_file.write_text(before)
        for path, text in sources.items():
            path.write_text(text)


@pytest.mark.slow
def test_the_readme_s_config_override_changes_the_results(recorded, tmp_path):
    """`--config 'certify={"sampling": "fixed"}'` (the README's example) reruns the Monte
    Carlo certify jobs, and their rows are fixed sampling's: every point drew n."""
    project, env = recorded
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    for folder in ("results", ".snakemake"):
        run(["cp", "-a", str(project / folder), str(clone / folder)], tmp_path)
    env = {**env, "PYTHONPATH": str(clone / "src")}
    run(["snakemake", *PROFILE, "--touch"], clone, env=env)  # same code, other paths
    override = ["--config", 'certify={"sampling": "fixed"}']
    planned = run(["snakemake", "-n", *override], clone, env=env).stdout
    assert "rule certify:" in planned
    run(["snakemake", *PROFILE, *override], clone, env=env)
    merged = clone / "results/certify/digits/laplace-type1-s0.5.tsv"
    side = json.loads(merged.with_suffix(".json").read_text())
    assert side["result"]["sampling"] == "fixed" and side["result"]["radii"] is None
    assert {row["n"] for row in read_table(merged)} == {"200"}
    caption = (clone / "results/captions/certified-accuracy.rst").read_text()
    assert "fixed sampling" in caption


@pytest.mark.parametrize(
    "override", ['resources={"certify": {"threads": 2}}', 'certify={"shards": [1, 2, 3]}']
)
def test_config_overrides_follow_the_schema_s_refs(tmp_path, override):
    """Snakemake passes --config values as text: they are made numbers as the schema wants,
    through its $refs (resources.*.threads is a $defs job), so the override validates."""
    project = make_project(tmp_path / "project")
    result = run(["snakemake", "-n", "--config", override], project)
    assert "Error validating config" not in result.stdout + result.stderr
    if "shards" in override:
        assert "shard-3-of-3" in result.stdout
