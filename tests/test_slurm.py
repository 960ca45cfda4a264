"""The workflow on a real SLURM cluster (the one-node cluster of .ci/start-slurm).

A small grid runs through `snakemake --profile workflow/profiles/slurm` and, beside it, through
the default local profile. Every `l1cert train` and `l1cert certify` call goes through a
recorder on PATH (sbatch passes the submitting environment to the job) that notes the SLURM job
and the GPUs Slurm gave it; the merged certificates of both runs must agree.
"""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CLUSTER_PROFILE = REPO / ".ci" / "slurm-profile"  # settings of the .ci/start-slurm cluster
WORKFLOW_FILES = ["Snakefile", "params.yaml", "workflow"]

NOISES = ["laplace", "gaussian"]
SIGMA = 0.25
SHARDS = 2
POINTS = 12

RECORDER = """#!/bin/sh
# Note which SLURM job and GPUs this l1cert call ran with, then run the real l1cert.
printf '%s\\t%s\\t%s\\t%s\\n' "$1" "${{SLURM_JOB_ID:-}}" "${{CUDA_VISIBLE_DEVICES:-}}" "$PWD" \\
    >> {record}
exec {l1cert} "$@"
"""


def require_cluster():
    """Skip without a reachable cluster, but fail under CI=true: CI must run this test."""
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-o", "%T %G"], capture_output=True, text=True, timeout=10
        )
        problem = None if out.returncode == 0 else f"sinfo failed: {out.stderr.strip()}"
        if problem is None and "gpu" not in out.stdout:
            problem = f"no node with GPUs (sinfo: {out.stdout.strip()!r})"
        if problem is None and not any(
            state.rstrip("*") in ("idle", "mixed", "allocated")
            for state, *_ in (line.split() for line in out.stdout.splitlines() if line)
        ):
            problem = f"no node up (sinfo: {out.stdout.strip()!r})"
    except (OSError, subprocess.TimeoutExpired) as e:
        problem = f"sinfo not usable: {e}"
    if problem:
        reason = f"no SLURM cluster reachable ({problem}); start one with `bash .ci/start-slurm`"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; CI=true, so the SLURM test must run")
        pytest.skip(reason)


def small_params(project: Path) -> dict:
    """The project's params.yaml shrunk to a grid that runs in seconds per job."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["dataset"] = "digits"
    params["sweep"] = {"noises": NOISES, "trainings": ["type1"], "sigmas": [SIGMA]}
    params["train"].update(epochs=2, batch_size=128)
    params["certify"].update(
        n0=20, n=200, batch=200, skip=1, max=POINTS, shards=list(range(1, SHARDS + 1))
    )
    for job in params["resources"].values():  # small enough for the test cluster's node
        job.update(threads=1, runtime=10, mem_mb=1000)
    return params


def copy_project(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest / name)
    shutil.rmtree(dest / "results", ignore_errors=True)
    (dest / "params.yaml").write_text(yaml.safe_dump(small_params(dest), sort_keys=False))
    return dest


def recorder_env(tmp: Path, record: Path) -> dict:
    """Environment whose `l1cert` records its SLURM job and GPUs in `record`."""
    venv_bin = Path(sys.executable).parent
    real = shutil.which("l1cert", path=str(venv_bin)) or shutil.which("l1cert")
    assert real, "l1cert is not installed"
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "l1cert").write_text(RECORDER.format(record=record, l1cert=real))
    (bin_dir / "l1cert").chmod(0o755)
    # Drop any surrounding job's variables (pytest itself may run in a job), not the config.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SRUN_")) or k == "SLURM_CONF"
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)  # whatever a job sees comes from Slurm
    env["PATH"] = os.pathsep.join([str(bin_dir), str(venv_bin), env.get("PATH", "")])
    return env


def targets() -> list[str]:
    return [f"results/certify/digits/{noise}-type1-s{SIGMA}.tsv" for noise in NOISES]


def start_snakemake(project: Path, profile_args: list[str], env: dict) -> subprocess.Popen:
    log = open(project / "snakemake.log", "w")
    cmd = [sys.executable, "-m", "snakemake", *profile_args, *targets()]
    return subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, project: Path) -> None:
    try:
        proc.wait(timeout=420)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log = (project / "snakemake.log").read_text()
    slurm_logs = sorted((project / ".snakemake" / "slurm_logs").rglob("*.log"))
    tails = "".join(f"\n--- {p}\n{p.read_text()[-2000:]}" for p in slurm_logs[-4:])
    assert proc.returncode == 0, f"snakemake failed in {project}:\n{log[-6000:]}{tails}"


def read_records(record: Path) -> list[dict]:
    fields = ["command", "job", "gpus", "workdir"]
    lines = record.read_text().splitlines()
    return [dict(zip(fields, line.split("\t"), strict=True)) for line in lines]


def job_info(job: str) -> dict:
    """`scontrol show job` as a dict (finished jobs stay visible: MinJobAge is a day)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True
    ).stdout
    return dict(item.split("=", 1) for item in out.split() if "=" in item)


def certificates(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        del row["time"]
    return rows


def test_slurm_run_matches_local_run(tmp_path):
    require_cluster()
    record = tmp_path / "record.tsv"
    env = recorder_env(tmp_path, record)
    on_slurm = copy_project(tmp_path.resolve() / "slurm")
    local = copy_project(tmp_path.resolve() / "local")

    slurm_run = start_snakemake(
        on_slurm,
        ["--profile", "workflow/profiles/slurm", "--workflow-profile", str(CLUSTER_PROFILE)],
        env,
    )
    local_run = start_snakemake(local, ["--profile", "workflow/profiles/default"], env)
    finish(local_run, local)
    finish(slurm_run, on_slurm)

    calls = [r for r in read_records(record) if r["command"] in ("train", "certify")]
    slurm_calls = [r for r in calls if r["workdir"] == str(on_slurm)]
    local_calls = [r for r in calls if r["workdir"] == str(local)]
    # The recorder saw every job of both runs; the local ones ran outside SLURM.
    for where in (slurm_calls, local_calls):
        assert sorted(r["command"] for r in where) == sorted(
            ["train"] * len(NOISES) + ["certify"] * len(NOISES) * SHARDS
        ), where
    assert all(r["job"] == "" and r["gpus"] == "" for r in local_calls), local_calls

    # Each train and certify call on the cluster ran in a batch job of its own with one GPU.
    jobs = [r["job"] for r in slurm_calls]
    assert all(jobs) and len(set(jobs)) == len(jobs), slurm_calls
    for call in slurm_calls:
        assert call["gpus"] in ("0", "1"), f"CUDA_VISIBLE_DEVICES not set by Slurm: {call}"
        info = job_info(call["job"])
        assert info["JobState"] == "COMPLETED" and info["BatchFlag"] == "1", info
        assert "gpu:1" in info.get("TresPerJob", ""), info
        assert info["WorkDir"] == str(on_slurm), info

    for target in targets():
        remote, here = certificates(on_slurm / target), certificates(local / target)
        assert len(remote) == POINTS
        assert remote == here, f"{target}: SLURM and local certificates differ"
