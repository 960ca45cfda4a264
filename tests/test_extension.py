"""One door per kind of extension: the registries that every layer reads, the parameter
dataclasses that generate options and schema, and the one function per command that both
engines build their command lines from."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from click.testing import CliRunner
from test_workflow import ROOT, make_project, params, run

from l1cert import bounds, captions, dvc_stages, figures, pipeline, sampling, schema
from l1cert.cli import main
from l1cert.config import CertifyConfig, DataConfig, ReportConfig, TrainConfig, Type2Config
from l1cert.fields import cli_fields, section_schema
from l1cert.noise import NOISES
from l1cert.utils import L1CertError

BASE_SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"


# --- the registries -----------------------------------------------------------------------


def test_every_bound_of_every_noise_is_registered_with_its_presentation():
    for cls in NOISES.values():
        for bound in cls.bounds:
            entry = bounds.BOUNDS[bound]
            assert entry.label and entry.caption and entry.color and entry.style
            assert bounds.owner(bound) == cls.name
    owned = [b for cls in NOISES.values() for b in cls.bounds]
    assert sorted(owned) == sorted(bounds.BOUNDS)  # no bound without a noise


def test_the_sampling_modes_are_those_the_noises_name():
    named = {mode for cls in NOISES.values() for mode in cls.samplings}
    assert named == set(sampling.MODES)
    found = schema.params_schema(BASE_SCHEMA)
    assert set(found["properties"]["certify"]["properties"]["sampling"]["enum"]) == named


def test_the_schema_enums_come_from_the_registries():
    found = schema.params_schema(BASE_SCHEMA)["properties"]
    assert found["sweep"]["properties"]["noises"]["items"]["enum"] == list(NOISES)
    # a released checkpoint has no template: it is certified by Monte Carlo
    sampled = [n for n, cls in NOISES.items() if "exact" not in cls.samplings]
    assert found["models"]["items"]["properties"]["noise"]["enum"] == sampled


def test_figures_and_captions_read_the_bound_registry(monkeypatch, tmp_path):
    """A new bound's label appears in Fig. 6 and the captions without editing either."""
    entry = bounds.BOUNDS["uniform"]
    patched = {**bounds.BOUNDS, "uniform": dataclasses.replace(entry, label="NEW LABEL")}
    monkeypatch.setattr(bounds, "BOUNDS", patched)
    monkeypatch.setattr(captions, "BOUNDS", patched)
    assert figures._style("uniform")["label"] == "NEW LABEL"
    text = captions.captions([], [0.0], 0.5)["radius-vs-pa"]
    assert "NEW LABEL" in text


def test_dvc_plots_draw_every_model_offline(tmp_path):
    """`dvc plots show` on a report's long plot data: every model of every bound is a curve
    (one series per model in the rendered data), and its page loads no script from a CDN."""
    import csv

    from conftest import write_certify_file

    project = make_project(tmp_path / "project")
    files = [
        write_certify_file(
            project / "c" / f"{noise}-type1-s{s}.tsv", noise, s,
            [{"idx": 0, "label": 1, "count": 950, "count_b": 30, "top_class": 1}],
        )
        for noise in ("laplace", "gaussian")
        for s in (0.25, 0.5)
    ]  # fmt: skip
    out = project / "results"
    assert (
        CliRunner().invoke(main, ["report", *map(str, files), "--out-dir", str(out)]).exit_code == 0
    )
    plot = "results/plots/certified-accuracy.csv"
    with open(project / plot) as f:
        models = {row["model"] for row in csv.DictReader(f)}
    assert len(models) == 4
    props = ["-x", "radius", "-y", "certified_accuracy", "--template", dvc_stages.PLOT_TEMPLATE]
    shown = run(["dvc", "plots", "show", "--json", plot, *props], project).stdout
    assert all(model in shown for model in models)
    run(["dvc", "plots", "show", plot, *props, "-o", "page"], project)
    page = (project / "page" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "vega-embed" in page and "laplace-type1-s0.25" in page


# --- one home per parameter set -----------------------------------------------------------


@pytest.mark.parametrize("cls", [DataConfig, TrainConfig, CertifyConfig, Type2Config, ReportConfig])
def test_the_schema_and_the_checks_agree_on_every_bound(cls):
    """For each numeric field, the values just inside and just outside its bounds are
    accepted or refused alike by the dataclass's check and by the generated schema."""
    from jsonschema import Draft202012Validator

    from l1cert.fields import check_field

    schema = section_schema(cls)
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata or f.name not in schema["properties"] or f.type == "str":
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
                    check_field(f, value, machine=False)  # the schema cannot know the machine
                    ours = True
                except L1CertError:
                    ours = False
                assert ours == validator.is_valid(value), (cls.__name__, f.name, value)


def test_cli_options_are_generated_from_the_dataclasses():
    for command, cls in (("certify", CertifyConfig), ("train", TrainConfig)):
        help_text = CliRunner().invoke(main, [command, "--help"]).output
        for name, _ in cli_fields(cls):
            assert f"--{name.replace('_', '-')}" in help_text, (command, name)


def test_a_new_certify_parameter_reaches_both_engines_through_its_field(monkeypatch):
    """A deciding certify field added in the test alone is an option of every certify job,
    one of its Snakemake params and one of its DVC stage's params, spelled ${certify.newkey}."""
    from l1cert.fields import option

    @dataclasses.dataclass(frozen=True)
    class Extended(CertifyConfig):
        newkey: int = option(0, "A new setting.", low=0, high=9)

    monkeypatch.setattr(pipeline, "CertifyConfig", Extended)
    config = params()
    config["certify"]["newkey"] = 3
    assert pipeline.decides(config, "certify", noise="laplace")["certify.newkey"] == 3
    command = pipeline.certify_command(pipeline.Source(config), "m.pt", "laplace", "1/2", "o.tsv")
    assert "--newkey 3" in command
    stages = yaml.safe_load(dvc_stages.dvc_yaml(config))["stages"]
    assert "certify.newkey" in stages["certify"]["params"]
    assert "--newkey ${certify.newkey}" in stages["certify"]["cmd"]


# --- one command line per step, for both engines -------------------------------------------


def test_the_report_s_experiment_files_are_named_as_the_stages_write_them(tmp_path):
    """DVC's report reads `--experiment params.yaml`: its file names must be the ones the
    certify and merge stages write, σ as the params spell it (2, not 2.0)."""
    config = {**params(), "sweep": {"noises": ["laplace"], "trainings": ["type1"],
                                   "sigmas": [2, 0.5, 1.0]}}  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(config))
    names = ["laplace-type1-s2.tsv", "laplace-type1-s0.5.tsv", "laplace-type1-s1.0.tsv"]
    root = tmp_path / "certify"
    with pytest.raises(L1CertError, match="laplace-type1-s2.tsv is missing .*l1cert dvc-yaml"):
        pipeline.merged_files(tmp_path / "p.yaml", root)
    (root / "digits").mkdir(parents=True)
    for name in names:
        (root / "digits" / name).touch()
    assert [p.name for p in pipeline.merged_files(tmp_path / "p.yaml", root)] == names


def test_the_rules_use_the_pipeline_builders():
    """No rule writes an `l1cert` command of its own: each runs the one l1cert.pipeline built."""
    for rule in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rule.read_text()
        assert '"l1cert ' not in text, rule.name
        assert text.count("shell:") == text.count('"{params.cmd} > {log} 2>&1"'), rule.name
