"""One door per kind of extension: the registries that every layer reads, the parameter
dataclasses that generate options and schema, and the one function per command that both
engines build their command lines from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_workflow import ROOT, make_project, params, run

from l1cert import certificates, figures, pipeline, report, sampling
from l1cert.cli import main
from l1cert.config import CertifyConfig, TrainConfig, Type2Config, section_schema
from l1cert.noise import NOISES
from l1cert.utils import L1CertError

BASE_SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"


# --- the registries -----------------------------------------------------------------------


def test_every_bound_of_every_noise_is_registered_with_its_presentation():
    for cls in NOISES.values():
        for bound in cls.bounds:
            entry = certificates.BOUNDS[bound]
            assert entry.label and entry.caption and entry.color and entry.style
            assert certificates.owner(bound) == cls.name
    owned = [b for cls in NOISES.values() for b in cls.bounds]
    assert sorted(owned) == sorted(certificates.BOUNDS)  # no bound without a noise


def test_the_sampling_modes_are_those_the_noises_name():
    named = {mode for cls in NOISES.values() for mode in cls.samplings}
    assert named == set(sampling.MODES)
    schema = pipeline.params_schema(BASE_SCHEMA)
    assert set(schema["properties"]["certify"]["properties"]["sampling"]["enum"]) == named


def test_the_schema_enums_come_from_the_registries():
    schema = pipeline.params_schema(BASE_SCHEMA)["properties"]
    assert schema["grid"]["properties"]["noises"]["items"]["enum"] == list(NOISES)
    assert schema["models"]["items"]["properties"]["noise"]["enum"] == list(NOISES)


def test_figures_and_captions_read_the_bound_registry(monkeypatch, tmp_path):
    """A new bound's label appears in Fig. 6 and the captions without editing either."""
    entry = certificates.BOUNDS["uniform"]
    patched = {**certificates.BOUNDS, "uniform": dataclasses.replace(entry, label="NEW LABEL")}
    monkeypatch.setattr(certificates, "BOUNDS", patched)
    monkeypatch.setattr(report, "BOUNDS", patched)
    assert figures._style("uniform")["label"] == "NEW LABEL"
    text = report.captions([], [0.0], 0.5)["radius-vs-pa"]
    assert "NEW LABEL" in text


def test_dvc_plots_draw_every_model_offline(tmp_path):
    """`dvc plots show` on a report's long plot data: every model of every bound is a curve
    (one series per model in the rendered data), and its page loads no script from a CDN."""
    import csv

    from conftest import write_certify_file

    project = make_project(tmp_path / "project")
    files = [
        write_certify_file(
            project / "c" / f"{noise}-type1-s{s}.tsv",
            noise,
            s,
            [
                {
                    "idx": 0,
                    "label": 1,
                    "predict": 1,
                    "correct": 1,
                    **{f"radius_{b}": 0.3 for b in certificates.BOUNDS},
                }
            ],
        )  # fmt: skip
        for noise in ("laplace", "gaussian")
        for s in (0.25, 0.5)
    ]
    out = project / "results"
    assert (
        CliRunner().invoke(main, ["report", *map(str, files), "--out-dir", str(out)]).exit_code == 0
    )
    plot = "results/plots/certified-accuracy.csv"
    with open(project / plot) as f:
        models = {row["model"] for row in csv.DictReader(f)}
    assert len(models) == 4
    props = ["-x", "radius", "-y", "certified_accuracy", "--template", pipeline.PLOT_TEMPLATE]
    shown = run(["dvc", "plots", "show", "--json", plot, *props], project).stdout
    assert all(model in shown for model in models)
    run(["dvc", "plots", "show", plot, *props, "-o", "page"], project)
    page = (project / "page" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vega-embed" in page and "laplace-type1-s0.25" in page


# --- one home per parameter set -----------------------------------------------------------


@pytest.mark.parametrize("cls", [TrainConfig, CertifyConfig, Type2Config])
def test_the_schema_and_the_checks_agree_on_every_bound(cls):
    """For each numeric field, the values just inside and just outside its bounds are
    accepted or refused alike by the dataclass's check and by the generated schema."""
    from jsonschema import Draft202012Validator

    from l1cert.config import check_field

    schema = section_schema(cls)
    for f in dataclasses.fields(cls):
        if not f.metadata or f.name not in schema["properties"] or f.type == "str":
            continue
        validator = Draft202012Validator(schema["properties"][f.name])
        meta = f.metadata
        for end in ("low", "high"):
            if meta[end] is None:
                continue
            edge = meta[end]
            step = 1 if f.type == "int" else 1e-9 * max(1, abs(edge))
            for value in (edge - step, edge, edge + step):
                value = int(value) if f.type == "int" else value
                try:
                    check_field(f, value)
                    ours = True
                except L1CertError:
                    ours = False
                assert ours == validator.is_valid(value), (cls.__name__, f.name, value)


def test_cli_options_are_generated_from_the_dataclasses():
    for command, cls in (("certify", CertifyConfig), ("train", TrainConfig)):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        for f in dataclasses.fields(cls):
            if f.metadata:
                assert f"--{f.name.replace('_', '-')}" in help_text, (command, f.name)


def test_a_new_certify_parameter_needs_only_its_field(tmp_path):
    """Both engines pass the certify section whole: a new key in params.yaml reaches
    `l1cert certify` as an option with no edit to dvc.yaml or the rules."""
    config = params()
    config["certify"]["newkey"] = 3
    src = pipeline.Source(config)
    command = pipeline.certify_command(src, "m.pt", "1/2", 1, "o.tsv")
    assert "--newkey 3" in command
    dvc = pipeline.Source(config, dvc=True)
    assert "${certify}" in pipeline.certify_command(dvc, "m.pt", "1/2", 1, "o.tsv")


# --- one command line per step, for both engines -------------------------------------------


def test_the_report_s_experiment_files_are_named_as_the_stages_write_them(tmp_path):
    """DVC's report reads `--experiment params.yaml`: its file names must be the ones the
    certify and merge stages write, σ as the params spell it (2, not 2.0)."""
    config = {**params(), "grid": {"noises": ["laplace"], "trainings": ["type1"],
                                   "sigmas": [2, 0.5, 1.0]}}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    names = [p.name for p in pipeline.merged_files(tmp_path / "p.yaml")]
    assert names == ["laplace-type1-s2.tsv", "laplace-type1-s0.5.tsv", "laplace-type1-s1.0.tsv"]


def test_the_committed_dvc_yaml_is_current():
    assert (ROOT / "dvc.yaml").read_text() == pipeline.dvc_yaml(params()), (
        "dvc.yaml is stale: run `l1cert dvc-yaml`"
    )


def _dvc_commands(project: Path) -> dict[str, str]:
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        return {stage.addressing: stage.cmd for stage in repo.index.stages}


@pytest.mark.parametrize("sampling_mode", ["sequential", "fixed"])
def test_snakemake_and_dvc_run_the_same_commands(tmp_path, sampling_mode):
    config = params()
    config["certify"]["sampling"] = sampling_mode
    project = make_project(tmp_path / "project", config)
    (project / "dvc.yaml").write_text(pipeline.dvc_yaml(config))
    dvc = set(_dvc_commands(project).values())
    src, dataset = pipeline.Source(config), config["dataset"]
    shards = config["certify"]["shards"]
    ours = {pipeline.data_command(src, dataset, f"results/data/{dataset}.json")}
    g = config["grid"]
    for noise in g["noises"]:
        for training in g["trainings"]:
            for sigma in g["sigmas"]:
                model = f"{noise}-{training}-s{sigma}"
                out = f"results/models/{dataset}/{model}"
                threads = config["resources"]
                ours.add(pipeline.train_command(src, dataset, noise, sigma, training,
                                                threads["train"]["threads"], out))  # fmt: skip
                for k in shards:
                    ours.add(pipeline.certify_command(
                        src, f"{out}/model.pt", f"{k}/{len(shards)}",
                        threads["certify"]["threads"],
                        f"results/certify/{dataset}/{model}/shard-{k}-of-{len(shards)}.tsv",
                    ))  # fmt: skip
    assert ours <= dvc, sorted(ours - dvc)[:2]
    certify = [c for c in dvc if c.startswith("l1cert certify")]
    assert all(("--radii" in c) == (sampling_mode == "sequential") for c in certify)


def test_the_rules_use_the_pipeline_builders():
    """No rule writes an `l1cert` command of its own: each runs the one l1cert.pipeline built."""
    for rule in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rule.read_text()
        assert '"l1cert ' not in text, rule.name
        assert text.count("shell:") == text.count('"{params.cmd} > {log} 2>&1"'), rule.name


# --- the code digest covers what decides a row's numbers -----------------------------------


@pytest.mark.slow
def test_editing_merge_messages_leaves_dvc_certify_stages_up_to_date(tmp_path):
    """Edit a message in the merge code: DVC's certify stages stay up to date (their code is
    what `l1cert certify` runs, merge.py is not in it); edit a radius function: they are stale.
    (tests/test_certify_cli.py checks the same for a partial certify file.)"""
    config = params()
    config["grid"] = {"noises": ["laplace"], "trainings": ["type1"], "sigmas": [0.5]}
    config["train"].update(epochs=1)
    config["certify"].update(n=200, skip=40, shards=[1])
    project = make_project(tmp_path / "project", config)
    (project / "dvc.yaml").write_text(pipeline.dvc_yaml(config))
    run(["dvc", "repro", "merge"], project)
    assert _stale(project) == set()

    merge = project / "src/l1cert/merge.py"
    merge.write_text(merge.read_text().replace("they are not one certification", "not one run"))
    assert _stale(project) == {"merge@laplace-type1-0.5"}

    radii = project / "src/l1cert/certificates.py"
    radii.write_text(radii.read_text().replace("2.0 * (1.0 - p)", "(1.0 - p) * 2.0"))
    assert _stale(project) == {"certify@laplace-type1-0.5-1", "merge@laplace-type1-0.5"}


def _stale(project: Path) -> set[str]:
    """The train, certify and merge stages that `dvc status` says need a rerun."""
    import json

    status = json.loads(run(["dvc", "status", "--json"], project).stdout or "{}")
    names = {name.split(":")[-1] for name in status}
    return {name for name in names if name.startswith(("certify", "merge", "train"))}


def test_the_row_code_is_closed_under_imports():
    """What the row-deciding modules import is row code too, but for the shared plumbing."""
    from l1cert.provenance import ROW_CODE, import_closure

    imported = {m for module in ROW_CODE for m in import_closure(module)}
    assert imported - set(ROW_CODE) <= {"l1cert", "l1cert.utils", "l1cert.names"}
    assert "l1cert.merge" not in imported and "l1cert.resume" not in imported
