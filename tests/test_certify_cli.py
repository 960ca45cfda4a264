"""`l1cert certify` and `l1cert merge` end to end: determinism, resume, refusals, bad input."""

import json
import math
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from conftest import (
    FAST,
    KINDS,
    assert_one_line_error,
    cli_options,
    read_table,
    run_cli,
    without_time,
)

from l1cert import data
from l1cert.certify import certify_to_tsv
from l1cert.certify_format import file_sha256
from l1cert.cli import main
from l1cert.config import DataConfig

torch.set_num_threads(1)


def test_tsv_columns_and_sidecar(checkpoint, tmp_path):
    out = certify_to_tsv(checkpoint, tmp_path / "run.tsv", **FAST)
    rows = read_table(out)
    assert list(rows[0]) == [
        "idx", "label", "predict", "radius", "correct", "time", "noise", "sigma", "scale",
        "n0", "n", "alpha", "count", "pa_lower", "radius_teng", "radius_lecuyer",
        "radius_teng_multiclass", "count_b", "pb_upper", "top_class",
    ]  # fmt: skip
    assert [int(r["idx"]) for r in rows] == list(range(30))
    labels = [data.load_split("digits", "test")[i][1] for i in range(30)]
    for row, label in zip(rows, labels, strict=True):
        assert int(row["label"]) == label
        assert row["noise"] == "laplace" and float(row["sigma"]) == 0.25
        assert row["radius"] == row["radius_teng"]
        assert row["predict"] in ("-1", row["top_class"])
        if int(row["predict"]) == -1:
            assert float(row["radius"]) == 0 and row["correct"] == "0"
        else:
            assert float(row["pa_lower"]) > 0.5
            assert int(row["correct"]) == (int(row["predict"]) == label)
        assert int(row["count"]) + int(row["count_b"]) <= 200
    assert {row["predict"] for row in rows} - {"-1"}  # some points are certified
    sidecar = json.loads((tmp_path / "run.json").read_text())
    part, result = sidecar["part"], sidecar["result"]
    assert part == {"shard": 1, "shards": 1, "points": 30, "total_points": 30}
    assert result["noise"] == "laplace" and result["sigma"] == 0.25
    assert result["model_sha256"] == file_sha256(checkpoint)
    assert sidecar["run"]["batch"] == 64 and sidecar["rows"] == 30
    # a finished run started again has nothing left to do and changes nothing
    before = out.read_text()
    certify_to_tsv(checkpoint, out, **FAST)
    assert out.read_text() == before


def test_three_shards_merge_to_one_run(checkpoint, tmp_path):
    single = certify_to_tsv(checkpoint, tmp_path / "single.tsv", **FAST)
    shards = [
        certify_to_tsv(checkpoint, tmp_path / f"shard-{k}-of-3.tsv", shard=(k, 3), **FAST)
        for k in (1, 2, 3)
    ]
    assert [len(read_table(s)) for s in shards] == [10, 10, 10]
    code, message = run_cli("merge", *reversed(shards), "--out", tmp_path / "merged.tsv")
    assert code == 0, message
    merged = read_table(tmp_path / "merged.tsv")
    assert without_time(merged) == without_time(read_table(single))
    sidecar = json.loads((tmp_path / "merged.json").read_text())
    assert sidecar["part"] == {"shard": None, "shards": 3, "points": 30, "total_points": 30}
    assert len(sidecar["run"]["merged_from"]) == 3
    assert sidecar["result"] == json.loads(single.with_suffix(".json").read_text())["result"]


@pytest.fixture(scope="module")
def shards(checkpoint, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    paths = [
        certify_to_tsv(checkpoint, folder / f"shard-{k}-of-2.tsv", shard=(k, 2), **FAST)
        for k in (1, 2)
    ]
    other = certify_to_tsv(checkpoint, folder / "other-n.tsv", shard=(2, 2), **{**FAST, "n": 100})
    return paths, other


def test_merge_refuses_overlap(shards, tmp_path):
    (one, two), _ = shards
    code, message = run_cli("merge", one, one, two, "--out", tmp_path / "m.tsv")
    assert_one_line_error(code, message, "overlap")
    assert not (tmp_path / "m.tsv").exists()


def test_merge_refuses_missing_shard(shards, tmp_path):
    (one, _), _ = shards
    code, message = run_cli("merge", one, "--out", tmp_path / "m.tsv")
    assert_one_line_error(code, message, "2/2 missing")
    assert not (tmp_path / "m.tsv").exists()


def test_merge_refuses_missing_points(shards, tmp_path):
    (one, two), _ = shards
    for path in (two, two.with_suffix(".json")):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    cut = tmp_path / two.name
    lines = cut.read_text().splitlines(keepends=True)
    cut.write_text("".join(lines[:-2]) + lines[-2][:5])  # one row gone, one torn
    code, message = run_cli("merge", one, cut, "--out", tmp_path / "m.tsv")
    assert_one_line_error(code, message, "misses 2 of its 15 test points")


def test_merge_refuses_settings_disagreement(shards, tmp_path):
    (one, _), other = shards
    code, message = run_cli("merge", one, other, "--out", tmp_path / "m.tsv")
    assert_one_line_error(code, message, "disagree on n ")


def test_merge_refuses_shard_without_sidecar(shards, tmp_path):
    (one, two), _ = shards
    lonely = tmp_path / "lonely.tsv"
    lonely.write_bytes(two.read_bytes())
    code, message = run_cli("merge", one, lonely, "--out", tmp_path / "m.tsv")
    assert_one_line_error(code, message, "sidecar")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--sigma", "0"], "sigma"),
        (["--sigma", "-1"], "sigma"),
        (["--alpha", "0"], "alpha"),
        (["--alpha", "1.5"], "alpha"),
        (["--n0", "0"], "--n0"),
        (["--n", "0"], "--n "),
        (["--noise", "cauchy"], "unknown noise 'cauchy'"),
        (["--shard", "3/2"], "--shard 3/2"),
        (["--shard", "0/2"], "--shard 0/2"),
        (["--shard", "two"], "k/K"),
        (["--dataset", "mnist"], "unknown dataset"),
    ],
)
def test_certify_bad_input(checkpoint, tmp_path, args, fragment):
    code, message = run_cli(
        "certify", "--model", checkpoint, "--n", 10, "--out", tmp_path / "x.tsv", *args
    )
    assert_one_line_error(code, message, fragment)
    assert not (tmp_path / "x.tsv").exists()


def test_certify_unreadable_checkpoint(tmp_path):
    garbage = tmp_path / "model.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    for path in (garbage, tmp_path / "missing.pt"):
        code, message = run_cli("certify", "--model", path, "--out", tmp_path / "x.tsv")
        assert_one_line_error(code, message, str(path))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--noise", "gaussian", "--bound", "lecuyer"], "'lecuyer' holds for laplace"),
        (["--noise", "laplace", "--bound", "linf"], "unknown bound 'linf'"),
        (["--noise", "cauchy"], "unknown noise"),
        (["--noise", "laplace", "--sigma", "0"], "sigma"),
        (["--noise", "laplace", "--pa", "1.2"], "--pa"),
    ],
)
def test_radius_bad_input(args, fragment):
    defaults = {"--sigma": "0.5", "--pa": "0.9"}
    extra = [x for key, value in defaults.items() if key not in args for x in (key, value)]
    code, message = run_cli("radius", *args, *extra)
    assert_one_line_error(code, message, fragment)


def test_radius_prints_every_bound_of_the_noise():
    result = CliRunner().invoke(main, ["radius", "--noise", "laplace", "--sigma", "0.5",
                                       "--pa", "0.99", "--pb", "0.004"])  # fmt: skip
    assert result.exit_code == 0
    lam = 0.5 / 2**0.5
    table = dict(line.split("\t") for line in result.stdout.splitlines())
    assert list(table) == ["teng", "lecuyer", "teng_multiclass"]
    assert float(table["teng"]) == pytest.approx(-lam * math.log(0.02), rel=1e-5)
    assert float(table["teng_multiclass"]) == pytest.approx(1.50921, rel=1e-5)
    result = CliRunner().invoke(main, ["radius", "--noise", "gaussian", "--sigma", "1",
                                       "--pa", "0.975"])  # fmt: skip
    assert result.stdout == "cohen\t1.95996\n"


# --- run-only settings decide nothing ---------------------------------------------------------


@pytest.fixture
def digits_roots(tmp_path):
    """The digits split saved by `l1cert data` under one root, and a copy of it elsewhere."""
    first = tmp_path / "data-a"
    data.prepare(tmp_path / "manifest.json", DataConfig(dataset="digits", root=str(first)))
    second = tmp_path / "elsewhere" / "data-b"
    shutil.copytree(first, second)
    return first, second


@pytest.fixture
def torch_threads():
    """--threads sets torch's threads for the whole process: put them back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("setting", ["batch", "threads", "root"])
def test_a_run_only_setting_changes_no_row(request, tmp_path, torch_threads, kind, setting):
    """One shard certified under two values of a run-only setting: the same rows but for
    their times, and the same `result` and `part` in the sidecar (resume and merge take them
    for one run)."""
    if setting == "threads" and (os.cpu_count() or 1) < 2:
        pytest.skip("needs 2 CPUs")
    model_fixture, settings = KINDS[kind]
    model = request.getfixturevalue(model_fixture)
    if setting == "root":
        first, second = request.getfixturevalue("digits_roots")
        values = [["--root", first], ["--root", second]]
    else:
        values = {"batch": [["--batch", 1000], ["--batch", 37]],
                  "threads": [["--threads", 1], ["--threads", 2]]}[setting]  # fmt: skip
    outs, sides = [], []
    for i, value in enumerate(values):
        out = tmp_path / f"run-{i}.tsv"
        code, message = run_cli("certify", "--model", model, *cli_options(settings), "--max", 30,
                                "--shard", "2/3", *value, "--out", out)  # fmt: skip
        assert code == 0, message
        outs.append(read_table(out))
        sides.append(json.loads(out.with_suffix(".json").read_text()))
    assert [int(row["idx"]) for row in outs[0]] == list(range(10, 20))
    assert without_time(outs[0]) == without_time(outs[1])
    assert sides[0]["result"] == sides[1]["result"] and sides[0]["part"] == sides[1]["part"]
    if setting != "root":
        assert [side["run"][setting] for side in sides] == [v[1] for v in values]
    if kind == "dssn":
        assert len({row["count"] for row in outs[0]}) > 1  # the votes do differ by point
