"""What decides a certify result is declared once, in `l1cert.config`: a new deciding parameter
is one field there, and resume and merge then tell runs apart by it with no other change.

The test adds such a field to a subclass of `CertifyConfig`, made with the helper the real
fields use, puts the subclass where certify and the command line read the class, and shows with
the real `certify_to_tsv` and `l1cert merge` that the field reaches the sidecar's `result`, that
resume refuses a partial file started with another value of it, and that merge refuses shards
that differ in it — each naming it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import torch
import yaml
from click.testing import CliRunner
from conftest import FAST, cut_short, params, read_table, run_cli, without_time

import l1cert.certify
import l1cert.cli
from l1cert import certify_format as fmt
from l1cert import dvc_stages, pipeline
from l1cert.certify import certify_to_tsv
from l1cert.cli import main
from l1cert.config import CertifyConfig, DataConfig, ReportConfig, TrainConfig, Type2Config
from l1cert.fields import cli_fields, click_options, option, section_schema
from l1cert.utils import L1CertError

torch.set_num_threads(1)


@dataclass(frozen=True)
class WithTemperature(CertifyConfig):
    """CertifyConfig with one more setting that decides the rows (in this test: by name)."""

    temperature: int = option(0, "A new deciding setting.", decides=True, low=0, high=10)


@pytest.fixture
def temperature(monkeypatch):
    """Certify and the command line read CertifyConfig with the new field; `l1cert certify`
    takes the option that `click_options` makes of it (as it would, declared at import)."""
    monkeypatch.setattr(l1cert.certify, "CertifyConfig", WithTemperature)
    monkeypatch.setattr(l1cert.cli, "CertifyConfig", WithTemperature)
    configs = l1cert.cli.COMMAND_CONFIGS
    monkeypatch.setitem(configs, "certify", (WithTemperature, *configs["certify"][1:]))
    made = click_options(WithTemperature)(lambda **options: None).__click_params__
    option = next(p for p in made if p.name == "temperature")
    monkeypatch.setattr(l1cert.cli.certify, "params", [*l1cert.cli.certify.params, option])


def test_the_field_is_declared_like_the_others():
    field = {name: f for name, f in cli_fields(WithTemperature)}["temperature"]
    assert field.metadata["decides"] is True
    assert "temperature" not in {name for name, _ in cli_fields(CertifyConfig)}
    assert WithTemperature(temperature=3).deciding(dataset="digits", takes=())["temperature"] == 3


def test_resume_refuses_a_partial_file_of_another_value(checkpoint, tmp_path, temperature):
    reference = certify_to_tsv(checkpoint, tmp_path / "reference.tsv", temperature=1, **FAST)
    side = fmt.read_sidecar(reference)
    assert side["result"]["temperature"] == 1  # in the result: resume and merge compare it

    partial = cut_short(reference, tmp_path / "refused.tsv", rows=4)  # temperature 1
    before = partial.read_bytes()
    with pytest.raises(L1CertError, match=r"other settings \(temperature: 1 there, 2 now\)"):
        certify_to_tsv(checkpoint, tmp_path / "refused.tsv", temperature=2, **FAST)
    assert partial.read_bytes() == before and not (tmp_path / "refused.tsv").exists()

    cut_short(reference, tmp_path / "resumed.tsv", rows=4)  # the same value resumes
    resumed = certify_to_tsv(checkpoint, tmp_path / "resumed.tsv", temperature=1, **FAST)
    assert without_time(read_table(resumed)) == without_time(read_table(reference))


def test_merge_refuses_shards_that_differ_in_it(checkpoint, tmp_path, temperature):
    shards = [certify_to_tsv(checkpoint, tmp_path / "s1.tsv", shard=(1, 2), temperature=1, **FAST)]
    # the other shard by the command line, its option generated from the field
    shards.append(tmp_path / "s2.tsv")
    code, message = run_cli("certify", "--model", checkpoint, "--n0", 20, "--n", 200, "--batch",
                             64, "--seed", 3, "--max", 30, "--shard", "2/2", "--temperature", 2,
                             "--out", shards[1])  # fmt: skip
    assert code == 0, message
    assert fmt.read_sidecar(shards[1])["result"]["temperature"] == 2
    code, message = run_cli("merge", *shards, "--out", tmp_path / "merged.tsv")
    assert code == 2, message
    assert message == (
        f"l1cert: error: {shards[1]} and {shards[0]} disagree on temperature (2 vs 1); "
        "they are not one certification"
    )
    assert not (tmp_path / "merged.tsv").exists()
    # shards of one value merge
    again = certify_to_tsv(checkpoint, tmp_path / "again.tsv", shard=(2, 2), temperature=1, **FAST)
    code, message = run_cli("merge", shards[0], again, "--out", tmp_path / "merged.tsv")
    assert code == 0, message
    assert fmt.read_sidecar(tmp_path / "merged.tsv")["result"]["temperature"] == 1


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
