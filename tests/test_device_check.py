"""The GPU device check (benchmarks/device_check.py) in its quick CPU mode: the script a GPU
will run is known to work before one runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from l1cert.names import TRAININGS
from l1cert.noise import NOISES

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


def test_the_quick_device_check_runs_every_path_and_prints_one_table():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--device", "cpu"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].endswith(" s") and " 0 failed" in lines[-1]
    table = [line.split() for line in lines[1:-1]]
    assert all(row[0] == "ok" for row in table)
    trained = {(row[2], row[3]) for row in table if row[1] == "train"}
    assert trained == {(n, t) for n in NOISES for t in TRAININGS}
    certified = {(row[2], row[3], row[4]) for row in table if row[1] == "certify"}
    for noise, cls in NOISES.items():
        for mode in cls.samplings:
            assert {(noise, mode, "fp32"), (noise, mode, "bf16")} <= certified
    throughput = [line for line in lines if line.split()[1:2] == ["throughput"]]
    for way in ("bare forward", "Cohen-style loop", "l1cert Smooth"):
        assert any(way in line and "draws/s" in line for line in throughput), way
