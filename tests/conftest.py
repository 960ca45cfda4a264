"""Helpers shared by the test modules: certify tables read back, and certify files written the
way `l1cert certify` writes them. A row is given by its counts; its derived columns (p̲A, p̄B,
every radius, predict, correct) come from certify's own functions (`sequential.ends`,
`sequential.bound_radii`, `certify.row_values`, `certify_format.format_row`), so that the readers'
re-derivation (`l1cert.rederive`) accepts it. Also the hand-made file of the report's tests."""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from l1cert import certify_format as fmt
from l1cert import data, dvc_stages, models, sequential, splitting
from l1cert.bounds import BOUNDS
from l1cert.certify import row_values
from l1cert.cli import main
from l1cert.grid import half_width
from l1cert.noise import NOISES
from l1cert.sampling import MODES


def read_table(path: Path) -> list[dict]:
    """A certify TSV as a list of {column: text}."""
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def without_time(rows: list[dict]) -> list[dict]:
    """Rows with the one column that differs between identical runs removed."""
    return [{k: v for k, v in row.items() if k != "time"} for row in rows]


def write_certify_file(
    path: Path,
    noise: str,
    sigma: float,
    rows: list[dict],
    *,
    time: float = 0.1,
    sidecar: bool = True,
    **settings,
) -> Path:
    """A sealed certify file (a merged run unless `settings` say otherwise) of `rows`, each
    {idx, label, count, count_b, top_class} (an exact noise's with runner_up; sequential
    sampling's with n, the draws it stopped at; any with its own time). `settings`: those of
    `certify_sidecar`."""
    side = certify_sidecar(noise, sigma, points=[row["idx"] for row in rows], **settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("\t".join(fmt.columns(noise)) + "\n")
        for row in rows:
            f.write(fmt.format_row(certify_row(side["result"], {"time": time, **row}), noise))
    if sidecar:
        fmt.write_sidecar(path, fmt.seal(path, side, len(rows)))
    return path


def certify_row(result: dict, row: dict) -> dict:
    """The fields certify writes for the point `row` of a run whose sidecar result this is:
    a sampled point's certificate as `Smooth._certificate` makes it from its counts, an exact
    one's radius from its votes as the bound computes it."""
    count, count_b, top = row["count"], row["count_b"], row["top_class"]
    votes = {"count": count, "count_b": count_b, "top_class": top}
    if MODES[result["sampling"]].estimates:
        looks = MODES[result["sampling"]].looks(result)
        n = row.get("n", looks[-1])
        ends = sequential.ends(count, count_b, looks.index(n), looks, result["alpha"],
                               result["num_classes"], project=False)  # fmt: skip
        # a box bound's point: the row's, else a blank image (any point is one a run could have)
        point = np.asarray(row.get("point", np.zeros(math.prod(result["input_shape"]))))
        radii = sequential.bound_radii(ends, result["noise"], result["scale"], point[None])
        cert = _certificate(
            **votes, prediction=top if float(ends.pa_lower) > 0.5 else fmt.ABSTAIN,
            pa_lower=float(ends.pa_lower), pb_upper=float(ends.pb_upper), n=n,
            n0=result["n0"], alpha=result["alpha"], runner_up=fmt.ABSTAIN, bound_radii=radii,
        )  # fmt: skip
    else:
        n, runner_up = result["n"], row["runner_up"]
        radii = {b: BOUNDS[b].radius(count, count_b, top, runner_up, result)
                 for b in result["bounds"]}  # fmt: skip
        cert = _certificate(
            **votes, prediction=top, pa_lower=count / n, pb_upper=count_b / n, n=n, n0=0,
            alpha=None, runner_up=runner_up, bound_radii=radii,
        )  # fmt: skip
    return row_values(row["idx"], row["label"], cert, row["time"], result)


def _certificate(bound_radii: dict, **fields) -> SimpleNamespace:
    """What `certify.row_values` reads of a `certificate.Certificate` (without importing torch)."""
    radii = {bound: float(np.ravel(radius)[0]) for bound, radius in bound_radii.items()}
    return SimpleNamespace(**fields, bound_radii=radii, radius=next(iter(radii.values())),
                           exact=fields["alpha"] is None)  # fmt: skip


def certify_sidecar(noise, sigma, *, dataset="digits", training="type1", n0=100, n=1000,
                    alpha=0.001, num_classes=10, points=(), **settings) -> dict:  # fmt: skip
    """The sidecar a merged run of these settings has, holding exactly `points` (every
    skip-th point of a dataset that just holds them, unless `settings` say otherwise). The
    sampling mode's own settings (radii, looks) are what its check makes of them; an exact
    noise (dssn) counts its copies on the dataset's grid (`grid` in `settings` to change it)."""
    points = sorted(points)
    skip = points[1] - points[0] if len(points) > 1 else 1
    result = {
        "dataset": dataset, "training": training, "noise": noise, "sigma": sigma,
        "model_name": f"{noise}-{training}-s{sigma}", "sampling": "fixed", "n0": n0, "n": n,
        "alpha": alpha, "seed": 0, "radii": None, "looks": None, "num_classes": num_classes,
        "input_shape": [1, 8, 8],
        "columns": fmt.columns(noise), "bounds": list(NOISES[noise].bounds), "split": "test",
        "dataset_size": (points[-1] + 1) if points else 1, "skip": skip, "max": -1,
        "code": {"version": "test", "sha256": "0" * 64},
    }  # fmt: skip
    if NOISES[noise].exact:
        result.update(_exact_settings(sigma, settings.pop("grid", None), dataset))
    else:
        result["scale"] = NOISES[noise](sigma).scale
    part = {"shard": None, "shards": 1, "points": len(points), "total_points": len(points)}
    for key, value in settings.items():
        (part if key in part else result)[key] = value
    result |= MODES[result["sampling"]].check(result)
    return {"format": fmt.SIDECAR_FORMAT, "result": result, "part": part, "run": {"batch": None}}


def _exact_settings(sigma: float, grid: int | None, dataset: str) -> dict:
    """What a DSSN run's sidecar records of its noise and sampling: L copies on grid q."""
    from l1cert.grid import half_width, num_offsets
    from l1cert.names import INPUT_GRID

    grid = grid or INPUT_GRID[dataset]
    scale = half_width(sigma, grid)
    copies = num_offsets(scale, grid)
    return {"sampling": "exact", "n0": None, "n": copies, "alpha": None, "seed": None,
            "scale": scale, "grid": grid, "copies": copies,
            "template_sha256": "0" * 64}  # fmt: skip


# --- the hand-made file --------------------------------------------------------------------

# Six digits points certified with Laplace noise (σ 0.5, n 1000, n0 100, α 0.001, 10 classes),
# each by its counts: (idx, label, votes for the top class, for the runner-up, top class).
# idx 2 abstains (p̲A < 1/2); idx 3 is wrong (class 5 for a 4), with a large radius that must
# not count. The report's tests compute what they expect from these counts themselves.
HAND_MADE_SIGMA, HAND_MADE_N, HAND_MADE_ALPHA, HAND_MADE_CLASSES = 0.5, 1000, 0.001, 10
HAND_MADE_ROWS = [
    (0, 1, 990, 5, 1),
    (1, 2, 800, 150, 2),
    (2, 3, 400, 380, 3),
    (3, 4, 995, 2, 5),
    (4, 5, 760, 200, 5),
    (5, 6, 999, 0, 6),
]
HAND_MADE_SECONDS = 0.5  # per point


def write_hand_made(folder: Path, training: str = "type1", points=None, **settings) -> Path:
    """The hand-made file as `folder`/digits/laplace-<training>-s0.5.tsv (and its sidecar);
    `points`: only these idx (a part of the run, as `settings` say)."""
    rows = [
        dict(zip(("idx", "label", "count", "count_b", "top_class"), row, strict=True))
        for row in HAND_MADE_ROWS
        if points is None or row[0] in points
    ]
    return write_certify_file(
        folder / "digits" / f"laplace-{training}-s0.5.tsv", "laplace", HAND_MADE_SIGMA, rows,
        training=training, n=HAND_MADE_N, alpha=HAND_MADE_ALPHA, num_classes=HAND_MADE_CLASSES,
        time=HAND_MADE_SECONDS, **settings,
    )  # fmt: skip


@pytest.fixture(scope="session")
def hand_made(tmp_path_factory) -> Path:
    """The hand-made file, written once per session; tests that change it work on a copy."""
    return write_hand_made(tmp_path_factory.mktemp("hand-made"))


def write_grid(folder: Path, noises, trainings, sigmas, dataset: str = "digits") -> list[Path]:
    """A certify file of the hand-made points for each noise × training × σ (an experiment's
    shape, not its numbers), as `folder`/<dataset>/<noise>-<training>-s<sigma>.tsv; an exact
    noise's (dssn) from votes out of its L copies, one point in two a vote short."""
    from l1cert.grid import half_width, num_offsets
    from l1cert.names import INPUT_GRID

    rows = [
        dict(zip(("idx", "label", "count", "count_b", "top_class"), row, strict=True))
        for row in HAND_MADE_ROWS
    ]
    files = []
    for noise in noises:
        for training in trainings:
            for sigma in sigmas:
                mine = rows
                if NOISES[noise].exact:
                    grid = INPUT_GRID[dataset]
                    copies = num_offsets(half_width(sigma, grid), grid)
                    mine = [{**row, "count": copies - 1 - row["idx"] % 2, "count_b": 1,
                             "runner_up": (row["top_class"] + 1) % 10} for row in rows]  # fmt: skip
                path = folder / dataset / f"{noise}-{training}-s{sigma}.tsv"
                files.append(write_certify_file(path, noise, sigma, mine, training=training,
                                                dataset=dataset))  # fmt: skip
    return files


# The files whose end-to-end runs take longest go first: with one worker per core (xdist, a
# file per worker), the longest last would leave the other core idle at the end.
SLOW_FIRST = ("test_engines.py", "test_pipeline.py", "test_publish.py", "test_slurm.py",
              "test_merge.py", "test_workflow.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


# --- processes that race or are killed ------------------------------------------------------
RENAMES = "rename,renameat,renameat2"  # os.replace is rename(2) here; the others for safety
# Rounds of two writers racing for one output; L1CERT_TEST_ROUNDS raises them for a soak.
RACE_ROUNDS = int(os.environ.get("L1CERT_TEST_ROUNDS", "3"))


def race(argvs: dict[str, list], env=None, timeout: float = 300) -> dict[str, tuple[int, str]]:
    """Start a real `l1cert` for each {name: argv} at once; {name: (exit code, stderr)}."""
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "l1cert.cli", *map(str, argv)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for name, argv in argvs.items()
    }  # fmt: skip
    return {name: (p.wait(timeout=timeout), p.stderr.read()) for name, p in procs.items()}


def kill_points(renames: int, must: set[int]) -> list[int]:
    """The renames to SIGKILL a writer at: every one with L1CERT_TEST_EVERY_RENAME=1 (minutes
    per writer); else the first, the last and those in `must` (around a commit point)."""
    if os.environ.get("L1CERT_TEST_EVERY_RENAME") == "1":
        return list(range(1, renames + 1))
    return sorted({1, renames, *(k for k in must if 1 <= k <= renames)})


def cut_short(reference: Path, out: Path, rows: int, edit: dict | None = None) -> Path:
    """`out`'s partial file as a certify run of `reference`'s settings killed after `rows`
    rows would leave it (its rows, its sidecar unsealed), row `edit["row"]` (1-based) changed
    to `edit`'s other {column: text} if given; returns the partial TSV."""
    from l1cert.resume import partial_path
    from l1cert.utils import json_text

    side = fmt.read_sidecar(reference)
    partial = partial_path(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    lines = reference.read_text().splitlines(keepends=True)[: rows + 1]
    if edit:
        header, row = lines[0].rstrip("\n").split("\t"), edit["row"]
        cells = lines[row].rstrip("\n").split("\t")
        for column, text in edit.items():
            if column != "row":
                cells[header.index(column)] = text
        lines[row] = "\t".join(cells) + "\n"
    partial.write_text("".join(lines))
    unsealed = {k: v for k, v in side.items() if k not in ("rows", "tsv_sha256", "certify_seconds")}
    partial.with_suffix(".json").write_text(json_text(unsealed))
    return partial


# --- models to certify, and the command line ----------------------------------------------
# Certify settings that take a second per run on the untrained models below.
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


def cli_options(settings: dict) -> list[str]:
    return [x for key, value in settings.items() for x in (f"--{key}", str(value))]


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no `except Exception` catches it."""


def kill_at(monkeypatch, k: int) -> list[int]:
    """os.replace raises Killed at its k-th call from now (1-based); returns the counter."""
    real, calls = os.replace, [0]

    def replace(src, dst, **kwargs):
        calls[0] += 1
        if calls[0] == k:
            raise Killed
        real(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


# --- a copy of the project, and the engines run in it -----------------------------------------
ROOT = Path(__file__).resolve().parents[1]


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


# A released checkpoint certified beside the sweep.
IMPORTED = {
    "name": "cohen-laplace-s0.25",
    "path": "checkpoints/resnet20.pth.tar",
    "format": "cohen",
    "noise": "laplace",
    "sigma": 0.25,
    "training": "type1",
}


def reduced_params() -> dict:
    config = params()
    config["sweep"] = {"noises": ["laplace"], "trainings": ["type2"], "sigmas": [0.5]}
    config["train"].update(epochs=2, lr_step=1)
    config["train"]["type2"]["warmup_epochs"] = 1
    config["certify"].update(n=200, skip=3, shards=[1, 2])
    config["report"]["radii"] = "0,0.25,0.5"
    return config
