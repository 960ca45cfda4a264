"""The certify output that other tools read (docs/design.md, "The certify output"): its
columns, rows and sidecar.

One file owns the format: the writer (`format_row`, `write_sidecar`, `seal`) and the reader
(`read_rows`, `read_sidecar`) sit side by side and share one strictness, used by certify's
resume, merge and the report. Free of torch, so reading results stays quick.

The sidecar (`x.json` beside `x.tsv`) has three sections:
- `result`: every setting that decides the rows — the model and data (by digest), the noise,
  the sampling and its settings, which points, the forward pass, the device, the code. Resume
  and merge compare it whole: a run continues or joins another only where they are equal.
- `part`: which part of the run the file holds (shard k of K, its points, all points); a
  merged file has shard null.
- `run`: how the file was made, compared by nothing (batch, threads, the model's path).
A complete TSV and its sidecar are published as a pair: the sidecar then records the TSV's row
count and sha256 (and the certification's seconds), and readers refuse a TSV that does not
match its sidecar (a crash between the two renames, or a hand-edited file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from l1cert.bounds import BOUNDS
from l1cert.config import CertifyConfig, TrainConfig
from l1cert.fields import declared, integer_check, number_check, numbers_check, text_check
from l1cert.noise import NOISES
from l1cert.utils import L1CertError, atomic_write_text

SIDECAR_FORMAT = "l1cert-certify/2"
ABSTAIN = -1

# Cohen et al.'s certify.py columns, then ours; then one radius_<bound> per bound of the noise.
COHEN_COLUMNS = ("idx", "label", "predict", "radius", "correct", "time")
RUN_COLUMNS = ("noise", "sigma", "scale", "n0", "n", "alpha", "count", "pa_lower")


def columns(noise: str) -> list[str]:
    """The full header for a noise (laplace adds count_b and pb_upper for teng_multiclass; an
    exact noise the runner-up's votes and share), then top_class: ĉA, which `predict` hides
    (-1) where the primary bound abstains though another bound (Theorem 1) may still certify
    it; an exact noise ends with runner_up, the class its radius is limited by."""
    cls = NOISES[noise]
    exact = any(BOUNDS[b].exact for b in cls.bounds)
    cols = [*COHEN_COLUMNS, *RUN_COLUMNS, *(f"radius_{bound}" for bound in cls.bounds)]
    if exact or any(BOUNDS[b].uses_pb for b in cls.bounds):
        cols += ["count_b", "pb_upper"]
    return [*cols, "top_class", *(["runner_up"] if exact else [])]


# An integer cell: plain ASCII digits, a leading minus at most, no more than 18 digits (int64).
# Python's int() also takes "+20", " 20", "2_0" and other scripts' digits; a file does not.
_INTEGER = re.compile(r"-?[0-9]{1,18}")


def is_integer(text: str) -> bool:
    return _INTEGER.fullmatch(text) is not None


def sidecar_path(path: str | os.PathLike) -> Path:
    """The settings JSON beside a certify file: x.tsv -> x.json, any other name x -> x.json
    appended (Cohen et al.'s files have no suffix, and `sigma_0.25` is not a suffix)."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix == ".tsv" else Path(f"{path}.json")


# --- rows ----------------------------------------------------------------------------------


def format_row(values: dict, noise: str) -> str:
    """One TSV line from {column: value}, in the order of `columns(noise)`; floats as %.10g."""
    text = {k: f"{v:.10g}" if isinstance(v, float) else str(v) for k, v in values.items()}
    return "\t".join(text[name] for name in columns(noise)) + "\n"


@dataclass(frozen=True)
class Table:
    """A certify file read back: its header and {idx: fields} in file order."""

    path: Path
    header: list[str]
    rows: dict[int, list[str]]

    def column(self, name: str, kind=float) -> list:
        at = self.header.index(name)
        return [kind(fields[at]) for fields in self.rows.values()]

    def lines(self) -> dict[int, str]:
        return {idx: "\t".join(fields) for idx, fields in self.rows.items()}


def read_rows(
    path: str | os.PathLike, num_classes: int | None = None, torn: str = "error"
) -> Table:
    """Read and validate a certify TSV (ours or Cohen et al.'s six columns).

    Every row: as many fields as the header, idx a non-negative integer seen once, label and
    predict integers (predict in [-1, num_classes) when the class count is known), every radius
    finite and ≥ 0, and `correct` equal to (predict == label, predict ≠ -1). `torn="drop"`
    ignores a last line without its newline (a run killed mid-write) instead of refusing it.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode()
    except FileNotFoundError:
        raise L1CertError(f"{path}: no such certify file") from None
    except IsADirectoryError:
        raise L1CertError(f"{path}: is a directory, not a certify file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise L1CertError(f"{path}: unreadable ({err})") from None
    if text and not text.endswith("\n"):
        if torn != "drop":
            raise L1CertError(f"{path}: truncated: the last line has no newline (torn write?)")
        text = text[: text.rfind("\n") + 1]
    lines = text.splitlines()
    if not lines or not lines[0].strip():
        raise L1CertError(f"{path}: empty file (no header, no rows)")
    header = lines[0].split("\t")
    missing = [c for c in COHEN_COLUMNS if c not in header]
    if missing:
        raise L1CertError(f"{path}: missing column(s) {', '.join(missing)}")
    check = _row_checker(path, header, num_classes)
    rows: dict[int, list[str]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        idx = check(number, fields)
        if idx in rows:
            raise L1CertError(f"{path}:{number}: test point {idx} appears twice")
        rows[idx] = fields
    return Table(path, header, rows)


def _row_checker(path: Path, header: list[str], num_classes: int | None):
    at = {name: header.index(name) for name in ("idx", "label", "predict", "correct")}
    radii = [i for i, name in enumerate(header) if name == "radius" or name.startswith("radius_")]
    top_at = header.index("top_class") if "top_class" in header else None

    def check(number: int, fields: list[str]) -> int:
        where = f"{path}:{number}"
        if len(fields) != len(header):
            raise L1CertError(
                f"{where}: malformed row ({len(fields)} fields, the header has {len(header)})"
            )
        for column, i in at.items():
            if not is_integer(fields[i]):
                raise L1CertError(f"{where}: {column} {fields[i]!r} is not an integer")
        idx, label, predict, correct = (int(fields[at[c]]) for c in at)
        if idx < 0:
            raise L1CertError(f"{where}: negative idx {idx}")
        if predict < ABSTAIN or (num_classes is not None and predict >= num_classes):
            raise L1CertError(f"{where}: predict {predict} is not a class or -1")
        if correct != int(predict != ABSTAIN and predict == label):
            raise L1CertError(f"{where}: correct {correct} disagrees with predict and label")
        if top_at is not None:
            top_class = int(fields[top_at]) if is_integer(fields[top_at]) else None
            if (
                top_class is None
                or top_class < ABSTAIN
                or (num_classes is not None and top_class >= num_classes)
            ):
                raise L1CertError(f"{where}: top_class {fields[top_at]!r} is not a class or -1")
        for i in radii:
            try:
                value = float(fields[i])
            except ValueError:
                value = math.nan
            if not (math.isfinite(value) and value >= 0):
                raise L1CertError(f"{where}: {header[i]} {fields[i]!r} is not a radius")
        return idx

    return check


# --- sidecar -------------------------------------------------------------------------------


def _shape(value):
    ok = (
        isinstance(value, list) and 0 < len(value) <= 8
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 10**6 for v in value)
        and math.prod(value) <= 10**8
    )  # fmt: skip
    return None if ok else "is not a list of positive dimensions"


def _code(value):
    if value is None:  # absent or null: see `read_sidecar`
        return None
    if not (
        isinstance(value, dict)
        and isinstance(value.get("version"), str)
        and isinstance(value.get("sha256"), str)
    ):
        return "is not {version, sha256} strings"
    return None


# The keys that readers (certify's resume, merge, the report) use, per section, and what each
# must hold. A key absent here or from the sidecar is not checked; the reader that needs it
# says so.
SIDECAR_CHECKS = {
    "result": {
        "code": _code,
        "dataset": text_check,
        "training": text_check,
        "model_name": text_check,
        "noise": text_check,
        "split": declared(CertifyConfig, "split"),
        "sampling": text_check,
        "device": text_check,
        "model_sha256": text_check,
        "sigma": declared(TrainConfig, "sigma"),
        "scale": number_check(0, 1e6, low_open=True, high_open=True),
        "alpha": declared(CertifyConfig, "alpha", none=True),  # None: exact, no failure probability
        "num_classes": integer_check(1, 10**5),
        "input_shape": _shape,
        "dataset_size": integer_check(1, 10**8),
        "skip": declared(CertifyConfig, "skip"),
        "max": declared(CertifyConfig, "max"),
        "n0": declared(CertifyConfig, "n0", none=True),  # None: exact, no selection draws
        "n": declared(CertifyConfig, "n"),
        "seed": declared(CertifyConfig, "seed", none=True),
        "grid": integer_check(1, 10**6),
        "copies": integer_check(2, 10**9),
        "template_sha256": text_check,
        "train_seconds": number_check(0, 1e12, none=True),
        "looks": numbers_check(int),
        "radii": numbers_check(float),
    },
    "part": {
        "shards": integer_check(1, 10**6),
        "shard": integer_check(1, 10**6, none=True),  # None once merged
        "points": integer_check(0, 10**8),
        "total_points": integer_check(0, 10**8),
    },
    "run": {
        # None once merged from shards of other batches
        "batch": declared(CertifyConfig, "batch", none=True),
    },
    "": {
        "tsv_sha256": text_check,
        "rows": integer_check(0, 10**8),
        "certify_seconds": number_check(0, 1e12, none=True),
    },
}
SECTIONS = ("result", "part", "run")
# What every reader needs of a sidecar's result and part, whatever made it (null allowed where
# the check says so: an exact run has no n0, alpha or seed); the code digest is refused on its
# own, below.
REQUIRED = {
    "result": ("dataset", "training", "model_name", "noise", "sigma", "scale", "num_classes",
               "dataset_size", "split", "skip", "max", "sampling", "n0", "n", "alpha",
               "columns"),
    "part": ("shard", "shards"),
}  # fmt: skip


def read_sidecar(path: str | os.PathLike, required: bool = True) -> dict:
    """The sidecar of certify file `path` ({} if it has none and `required` is false).

    Its sections must be there, with the code digest, and every key of SIDECAR_CHECKS it holds
    is checked (type and range); anything else is a one-line L1CertError naming file and key.
    """
    side = sidecar_path(path)
    try:
        settings = json.loads(side.read_bytes().decode())
    except FileNotFoundError:
        if not required:
            return {}
        raise L1CertError(f"sidecar {side} not found (each certify TSV needs its .json)") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise L1CertError(f"cannot read sidecar {side}: {err}") from None
    if isinstance(settings, dict) and settings.get("format") == "l1cert-certify/1":
        raise L1CertError(
            f"{side} was written by l1cert 0.1 (sidecar format l1cert-certify/1), which kept no "
            "record of what decides its rows apart from how they were made: certify afresh"
        )
    if not isinstance(settings, dict) or settings.get("format") != SIDECAR_FORMAT:
        raise L1CertError(f"{side} is not an l1cert certify sidecar ({SIDECAR_FORMAT})")
    for section in SECTIONS:
        if not isinstance(settings.get(section), dict):
            raise L1CertError(f"{side}: no {section} section (an l1cert certify sidecar has "
                              f"{', '.join(SECTIONS)})")  # fmt: skip
    for section, keys in REQUIRED.items():
        missing = [key for key in keys if key not in settings[section]]
        if missing:
            raise L1CertError(f"{side}: {section} lacks {', '.join(missing)}")
    for section, checks in SIDECAR_CHECKS.items():
        found = settings[section] if section else settings
        for key, check in checks.items():
            problem = check(found[key]) if key in found else None
            if problem:
                shown = repr(found[key])
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                where = f"{section}.{key}" if section else key
                raise L1CertError(f"{side}: {where} {shown} {problem}")
    if not isinstance(settings["result"]["columns"], list):
        raise L1CertError(f"{side}: result.columns is not a list of column names")
    if settings["result"].get("code") is None:
        raise L1CertError(
            f"{side} records no code digest: its rows cannot be re-derived by this code; "
            "certify afresh"
        )
    shard, shards = settings["part"].get("shard"), settings["part"].get("shards")
    if shard is not None and shards is not None and shard > shards:
        raise L1CertError(f"{side}: part.shard {shard} of {shards} shards")
    return settings


def write_sidecar(path: str | os.PathLike, settings: dict) -> None:
    atomic_write_text(sidecar_path(path), json.dumps(settings, indent=2) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def seal(path: str | os.PathLike, settings: dict, rows: int) -> dict:
    """`settings` plus the row count and digest of the finished TSV at `path`."""
    return {**settings, "rows": rows, "tsv_sha256": file_sha256(path)}


def check_sealed(path: str | os.PathLike, settings: dict, table: Table) -> None:
    """Refuse a published TSV that is not the one its sidecar describes."""
    if "tsv_sha256" not in settings:
        raise L1CertError(f"{sidecar_path(path)} belongs to an unfinished run (no digest)")
    if len(table.rows) != settings.get("rows") or file_sha256(path) != settings["tsv_sha256"]:
        raise L1CertError(
            f"{path} does not match its sidecar (rows or sha256 differ): the pair was not "
            "published together; rerun the command that made it"
        )
