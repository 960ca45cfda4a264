"""The certify output that other tools read (DESIGN.md §3): its columns and its sidecar.

Shared by the writer (`l1cert.shards`) and the readers (`l1cert.report`); free of torch, so
reading results stays quick.
"""

from __future__ import annotations

import os
from pathlib import Path

from l1cert.certificates import BOUNDS
from l1cert.noise import NOISES

# Cohen et al.'s certify.py columns, then ours; then one radius_<bound> per bound of the noise.
COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
RUN_COLUMNS = ("noise", "sigma", "scale", "n0", "n", "alpha", "count", "pa_lower")


def columns(noise: str) -> list[str]:
    """The full header for a noise (laplace adds count_b and pb_upper for teng_multiclass)."""
    bounds = NOISES[noise].bounds
    cols = [*COHEN_COLUMNS, *RUN_COLUMNS, *(f"radius_{bound}" for bound in bounds)]
    if any(BOUNDS[bound].uses_pb for bound in bounds):
        cols += ["count_b", "pb_upper"]
    return cols


def sidecar_path(path: str | os.PathLike) -> Path:
    """The settings JSON beside a certify file: x.tsv -> x.json, any other name x -> x.json
    appended (Cohen et al.'s files have no suffix, and `sigma_0.25` is not a suffix)."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix == ".tsv" else Path(f"{path}.json")
