"""How certify spends its forward passes (`l1cert.sampling`): each mode's rows, its settings
checked, and runs of other modes kept apart."""

from __future__ import annotations

import json

import pytest
from conftest import FAST, ROOT, assert_one_line_error, read_table, run_cli, without_time

from l1cert import sampling, schema
from l1cert.certify import certify_to_tsv
from l1cert.noise import NOISES

SEQUENTIAL = {**FAST, "n": 800, "sampling": "sequential", "radii": [0, 0.1, 0.25]}

BASE_SCHEMA = ROOT / "workflow" / "schemas" / "params.schema.yaml"


def test_sequential_rows_stop_at_looks_and_shards_equal_one_run(checkpoint, tmp_path):
    single = certify_to_tsv(checkpoint, tmp_path / "single.tsv", **SEQUENTIAL)
    rows = read_table(single)
    looks = [100, 200, 400, 800]
    assert [int(r["idx"]) for r in rows] == list(range(30))  # sorted, whatever order they ended
    assert all(int(r["n"]) in looks for r in rows)
    assert any(int(r["n"]) < 800 for r in rows)  # some points stop early
    sidecar = json.loads(single.with_suffix(".json").read_text())["result"]
    assert (sidecar["sampling"], sidecar["radii"], sidecar["looks"]) == (
        "sequential",
        [0, 0.1, 0.25],
        looks,
    )
    shards = [certify_to_tsv(checkpoint, tmp_path / f"s-{k}-of-3.tsv", shard=(k, 3),
                             **SEQUENTIAL) for k in (1, 2, 3)]  # fmt: skip
    code, message = run_cli("merge", *shards, "--out", tmp_path / "merged.tsv")
    assert code == 0, message
    assert without_time(read_table(tmp_path / "merged.tsv")) == without_time(rows)


def test_merge_refuses_mixed_sampling(checkpoint, tmp_path):
    one = certify_to_tsv(checkpoint, tmp_path / "a-1-of-2.tsv", shard=(1, 2), **FAST)
    two = certify_to_tsv(checkpoint, tmp_path / "a-2-of-2.tsv", shard=(2, 2),
                         **{**SEQUENTIAL, "n": 200})  # fmt: skip
    code, message = run_cli("merge", one, two, "--out", tmp_path / "m.tsv")
    assert_one_line_error(code, message, "disagree on sampling")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--sampling", "sequential"], "needs --radii"),
        (["--sampling", "sequential", "--radii", "0.5,0.25"], "increasing"),
        (["--sampling", "sequential", "--radii", "-1,0.25"], "increasing non-negative"),
        (["--sampling", "sequential", "--radii", "0,1", "--n", "50"], "first round of 100"),
        (["--sampling", "adaptive"], "unknown sampling"),
        (["--compile", "maybe"], "unknown compile mode"),
        (["--precision", "fp8"], "unknown precision"),
    ],
)
def test_certify_bad_sampling_options(checkpoint, tmp_path, args, fragment):
    code, message = run_cli("certify", "--model", checkpoint, "--out", tmp_path / "x.tsv", *args)
    assert_one_line_error(code, message, fragment)
    assert not (tmp_path / "x.tsv").exists() and not (tmp_path / "partial").exists()


def test_a_noise_is_exact_where_its_modes_all_count_exactly():
    for cls in NOISES.values():
        assert cls.exact == (not any(sampling.MODES[m].estimates for m in cls.samplings)), cls


def test_the_sampling_modes_are_those_the_noises_name():
    named = {mode for cls in NOISES.values() for mode in cls.samplings}
    assert named == set(sampling.MODES)
    found = schema.params_schema(BASE_SCHEMA)
    assert set(found["properties"]["certify"]["properties"]["sampling"]["enum"]) == named
