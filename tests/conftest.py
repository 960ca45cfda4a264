"""Helpers shared by the test modules: certify tables read back, and hand-made certify files
written the way `l1cert certify` writes them (header from `columns()`, sealed sidecar)."""

from __future__ import annotations

import csv
from pathlib import Path

from l1cert import certify_format as fmt
from l1cert.noise import NOISES


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
    dataset: str = "digits",
    training: str = "type1",
    n0: int = 100,
    n: int = 1000,
    alpha: float = 0.001,
    num_classes: int = 10,
    sidecar: bool = True,
    **settings,
) -> Path:
    """A merged certify file of `rows` ({column: value}; missing run columns are filled in)."""
    scale = NOISES[noise](sigma).scale
    fill = {
        "time": 0.1,
        "noise": noise,
        "sigma": sigma,
        "scale": scale,
        "n0": n0,
        "n": n,
        "alpha": alpha,
        "count": 900,
        "pa_lower": 0.9,
        "count_b": 50,
        "pb_upper": 0.06,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        f.write("\t".join(fmt.columns(noise)) + "\n")
        for row in rows:
            values = {**fill, **row}
            values.setdefault("radius", values[f"radius_{NOISES[noise].bounds[0]}"])
            values.setdefault("top_class", values["predict"] if values["predict"] >= 0 else 0)
            f.write(fmt.format_row(values, noise))
    if sidecar:
        doc = {
            "format": fmt.SIDECAR_FORMAT,
            "dataset": dataset,
            "training": training,
            "noise": noise,
            "sigma": sigma,
            "model_name": f"{noise}-{training}-s{sigma}",
            "scale": scale,
            "n0": n0,
            "n": n,
            "alpha": alpha,
            "num_classes": num_classes,
            "columns": fmt.columns(noise),
            **settings,
        }
        fmt.write_sidecar(path, fmt.seal(path, doc, len(rows)))
    return path
