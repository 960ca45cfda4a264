"""`l1cert certify` and `l1cert merge` end to end: determinism, resume, refusals, bad input."""

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from click.testing import CliRunner
from conftest import read_table, without_time

from l1cert import data, models, sampling, splitting
from l1cert.certify import certify_to_tsv
from l1cert.certify_format import file_sha256
from l1cert.cli import main
from l1cert.config import DataConfig
from l1cert.grid import half_width
from l1cert.resume import partial_path
from l1cert.utils import L1CertError

torch.set_num_threads(1)

FAST = dict(n0=20, n=200, alpha=0.001, batch=64, seed=3, max=30, progress=False)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained digits MLP in the real checkpoint format: enough to exercise certify."""
    info = data.dataset_info("digits")
    torch.manual_seed(0)
    model = models.build_model("digits_mlp", 10, info.input_shape, info.mean, info.std)
    meta = dict(
        arch="digits_mlp", dataset="digits", num_classes=10, input_shape=info.input_shape,
        mean=info.mean, std=info.std, noise="laplace", sigma=0.25, training="type1",
        type2=None, epochs=0, seed=0,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("model") / "model.pt"
    models.save_model(path, model, meta)
    return path


def run_cli(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stderr.strip()


def assert_one_line_error(code, message, *fragments):
    assert code == 2, message
    assert message.startswith("l1cert: error: ") and "\n" not in message, message
    assert "Traceback" not in message
    for fragment in fragments:
        assert fragment in message


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


SEQUENTIAL = {**FAST, "n": 800, "sampling": "sequential", "radii": [0, 0.1, 0.25]}


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


def test_resume_refuses_other_settings(checkpoint, tmp_path):
    out = tmp_path / "run.tsv"
    certify_to_tsv(checkpoint, out, **FAST)
    args = ["certify", "--model", checkpoint, "--n0", 20, "--n", 400, "--batch", 64, "--seed", 3]
    code, message = run_cli(*args, "--max", 30, "--out", out)
    assert_one_line_error(code, message, "other settings", "n: 200")


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


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["fixed", "sequential"])
def test_resume_after_sigkill(checkpoint, tmp_path, sampling):
    """Kill a real `l1cert certify` mid-run (sequential: mid-round for the points in flight),
    tear its last line, restart: the same table as one uninterrupted run."""
    out = tmp_path / "killed.tsv"
    partial = partial_path(out)
    radii = {"fixed": {}, "sequential": {"radii": [0, 0.1, 0.25]}}[sampling]
    args = [
        sys.executable, "-m", "l1cert.cli", "certify", "--model", str(checkpoint),
        "--n0", "50", "--n", "10000", "--batch", "1000", "--seed", "3", "--max", "30",
        "--threads", "1", "--sampling", sampling, "--out", str(out),
        *(["--radii", "0,0.1,0.25"] if radii else []),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if partial.exists() and len(partial.read_text().splitlines()) >= 6:  # header + 5 rows
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(partial.read_text().splitlines()) - 1
    assert 5 <= done_before < 30 and not out.exists(), "the run must be killed mid-way"
    with open(partial, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write("28\t4\t")

    subprocess.run(args, env=env, check=True, stderr=subprocess.DEVNULL)
    resumed = read_table(out)
    assert [int(r["idx"]) for r in resumed] == list(range(30))  # none lost, none twice
    reference = certify_to_tsv(
        checkpoint, tmp_path / "reference.tsv", sampling=sampling,
        **{**FAST, "n0": 50, "n": 10000, "batch": 1000, "max": 30, **radii},
    )  # fmt: skip
    assert without_time(resumed) == without_time(read_table(reference))


def test_a_second_writer_stops_at_once_naming_the_first(checkpoint, tmp_path):
    from l1cert.transaction import exclusive_lock

    out = tmp_path / "run.tsv"
    with exclusive_lock(partial_path(out)):
        code, message = run_cli("certify", "--model", checkpoint, "--n", 10, "--out", out)
    assert_one_line_error(code, message, "is being written by pid", str(os.getpid()))
    assert not out.exists()


def test_resume_refuses_rows_made_by_other_code(checkpoint, tmp_path):
    out = tmp_path / "run.tsv"
    certify_to_tsv(checkpoint, out, **FAST)
    partial = partial_path(out)  # a run cut short under an older version of the code
    partial.write_text("".join(out.read_text().splitlines(keepends=True)[:4]))
    side = json.loads(out.with_suffix(".json").read_text())
    del side["rows"], side["tsv_sha256"], side["certify_seconds"]
    side["result"]["code"] = {"version": "0.0.9", "sha256": "0" * 64}
    partial.with_suffix(".json").write_text(json.dumps(side))
    out.unlink()
    out.with_suffix(".json").unlink()
    with pytest.raises(L1CertError, match="made by other l1cert code .* to start afresh"):
        certify_to_tsv(checkpoint, out, **FAST)
    assert len(partial.read_text().splitlines()) == 4  # left as it was


def test_resume_survives_edits_outside_the_row_code(checkpoint, tmp_path, monkeypatch):
    """The sidecar's code digest covers the modules that decide a row's numbers: a partial file
    made before an edit of merge's messages resumes, one made before an edit of a radius
    function is refused."""
    import shutil

    from l1cert import provenance

    reference = certify_to_tsv(checkpoint, tmp_path / "reference.tsv", **FAST)
    package = tmp_path / "l1cert"
    shutil.copytree(provenance.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_DIR", package)

    def cut_short(out):  # the run killed after 3 rows, its partial file left behind
        partial = partial_path(out)
        partial.parent.mkdir(exist_ok=True)
        partial.write_text("".join(reference.read_text().splitlines(keepends=True)[:4]))
        side = json.loads(reference.with_suffix(".json").read_text())
        del side["rows"], side["tsv_sha256"], side["certify_seconds"]
        partial.with_suffix(".json").write_text(json.dumps(side))

    merge = package / "merge.py"
    merge.write_text(merge.read_text().replace("they are not one certification", "not one run"))
    cut_short(tmp_path / "resumed.tsv")
    resumed = certify_to_tsv(checkpoint, tmp_path / "resumed.tsv", **FAST)
    assert without_time(read_table(resumed)) == without_time(read_table(reference))

    radii = package / "bounds.py"
    radii.write_text(radii.read_text().replace("2.0 * (1.0 - p)", "(1.0 - p) * 2.0"))
    cut_short(tmp_path / "refused.tsv")
    with pytest.raises(L1CertError, match="made by other l1cert code"):
        certify_to_tsv(checkpoint, tmp_path / "refused.tsv", **FAST)


# --- run-only settings decide nothing ---------------------------------------------------------


@pytest.fixture(scope="module")
def dssn_checkpoint(tmp_path_factory):
    """An untrained digits MLP under DSSN (σ 0.5: L = 27 copies), its template in the
    checkpoint."""
    info = data.dataset_info("digits")
    torch.manual_seed(0)
    model = models.build_model("digits_mlp", 10, info.input_shape, info.mean, info.std)
    lam = half_width(0.5, 16)
    meta = dict(
        arch="digits_mlp", dataset="digits", num_classes=10, input_shape=info.input_shape,
        mean=info.mean, std=info.std, noise="dssn", sigma=0.5, training="type1",
        type2=None, epochs=0, seed=0, grid=16,
    )  # fmt: skip
    template = splitting.make_template(info.input_shape, lam, 16, seed=0)
    path = tmp_path_factory.mktemp("dssn") / "model.pt"
    models.save_model(path, model, meta, {"template": template})
    return path


# Each sampling mode's model and settings (the library's keywords; the CLI's options).
KINDS = {
    "fixed": ("checkpoint", dict(n0=20, n=200, seed=3)),
    "sequential": (
        "checkpoint",
        dict(n0=20, n=800, seed=3, sampling="sequential", radii="0,0.1,0.25"),
    ),
    "dssn": ("dssn_checkpoint", {}),
}


def _options(settings: dict) -> list[str]:
    return [x for key, value in settings.items() for x in (f"--{key}", str(value))]


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
        code, message = run_cli("certify", "--model", model, *_options(settings), "--max", 30,
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


class _Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", KINDS)
def test_a_partial_file_resumes_under_another_batch_size(request, tmp_path, monkeypatch, kind):
    """A run with batch 1000 stopped after 4 rows, resumed with batch 37: the table of one
    uninterrupted run."""
    model_fixture, settings = KINDS[kind]
    model = request.getfixturevalue(model_fixture)
    options = dict(settings, max=30, progress=False)
    name = {"dssn": "exact"}.get(kind, kind)
    mode = sampling.MODES[name]

    def stopped_after_4(smooth, test_set, todo, run_settings):
        for row, certified in enumerate(mode.run(smooth, test_set, todo, run_settings)):
            if row == 4:
                raise _Interrupted
            yield certified

    out = tmp_path / "resumed.tsv"
    with monkeypatch.context() as patch:
        patch.setitem(sampling.MODES, name, dataclasses.replace(mode, run=stopped_after_4))
        with pytest.raises(_Interrupted):
            certify_to_tsv(model, out, batch=1000, **options)
    partial = partial_path(out)
    assert len(partial.read_text().splitlines()) == 5 and not out.exists()  # header, 4 rows
    assert json.loads(partial.with_suffix(".json").read_text())["run"]["batch"] == 1000

    certify_to_tsv(model, out, batch=37, **options)
    reference = certify_to_tsv(model, tmp_path / "reference.tsv", batch=1000, **options)
    resumed = read_table(out)
    assert [int(row["idx"]) for row in resumed] == list(range(30))
    assert without_time(resumed) == without_time(read_table(reference))
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["run"]["batch"] == 37
    assert side["result"] == json.loads(reference.with_suffix(".json").read_text())["result"]
