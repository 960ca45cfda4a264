"""A reduced experiment run for real by both engines: through Snakemake's default profile,
through `dvc repro` in a fresh clone, through the team-sharing path (dvc push, a fresh clone,
dvc pull, snakemake --touch), with a released checkpoint imported, and as DVC experiments."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import (
    IMPORTED,
    PROFILE,
    make_project,
    params,
    read_table,
    reduced_params,
    run,
    without_time,
)

from l1cert import certify_format as fmt
from l1cert.layout import JOB_COSTS, LOGS, all_bounds

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

    # Snakemake's record of every train and certify job, summarized for its HTML report
    with open(project / JOB_COSTS) as f:
        jobs = list(csv.DictReader(f))
    assert [(j["stage"], j["job"]) for j in jobs] == [
        ("certify", f"{MODEL}/shard-1-of-2"), ("certify", f"{MODEL}/shard-2-of-2"),
        ("train", MODEL),
    ]  # fmt: skip
    for job in jobs:
        assert float(job["seconds"]) > 0 and float(job["max_rss_mb"]) > 10, job
    certify_seconds = fmt.read_sidecar(project / MERGED)["certify_seconds"]
    assert certify_seconds < sum(float(j["seconds"]) for j in jobs if j["stage"] == "certify")

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
    repro = run(["dvc", "repro"], clone)
    # each stage kept its log as Snakemake's jobs do, and the terminal still showed it
    for stage in ("train", "certify", "merge", "report"):  # a merge that succeeds says nothing
        log = clone / LOGS[stage].format(dataset="digits", model=MODEL, shard="1-of-2")
        assert log.exists() and (stage == "merge" or log.read_text().strip()), log
    certify_log = (clone / LOGS["certify"].format(dataset="digits", model=MODEL,
                                                   shard="1-of-2")).read_text()  # fmt: skip
    assert "l1cert certify: compile off" in certify_log and "\r" not in certify_log
    assert "l1cert certify: compile off" in repro.stdout + repro.stderr
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
    done = run(["snakemake", "-n", *PROFILE], clone).stdout
    # nothing to compute: only the summary of Snakemake's job records (which stay where the
    # jobs ran: this clone has none) is written again
    planned = done[done.index("Job stats:") :].split("\n\n")[0].splitlines()[3:]
    assert {line.split()[0] for line in planned} == {"job_costs", "all", "total"}, done
    assert "up to date" in run(["dvc", "status"], clone).stdout


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
