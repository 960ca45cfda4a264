"""Rows read back are re-derived, not trusted.

Every derived column of a certify row is recomputed from the row's counts and the run's
settings by the code that certify itself uses — p̲A (and p̄B) from count, n, α and the look
(`sequential.bounds`), every radius from them (`sequential.radii`), the exact DSSN radius from
its votes, `predict` and `correct` from the counts and the label, the settings columns from the
sidecar — and the first row that disagrees is refused in one line naming file, idx and column.
Resume (before a partial file is carried on and sealed), merge and the report call it, so a
row edited by hand or by a tool never reaches a table. A digest chained over the rows would
catch edits too, but not a row that was wrong when written; recomputing catches both, and
costs one vectorised pass over the file. Torch-free.
"""

from __future__ import annotations

import numpy as np

from l1cert import certificates, sequential
from l1cert.certify_format import ABSTAIN, Table
from l1cert.noise import noise_class
from l1cert.utils import L1CertError

_RTOL, _ATOL = 1e-8, 1e-12  # rows print floats with 10 significant digits
_SHORT = 1e-5  # and sigma and alpha as %g, six


def check_rows(path, table: Table, settings: dict, labels: dict[int, int] | None = None):
    """Refuse the first row of `table` (read from `path`, a run of `settings`) whose derived
    columns are not what its counts give; `labels`: the dataset's label of each idx, where the
    reader has the dataset (resume)."""
    if not table.rows:
        return
    rows = _Columns(path, table)
    noise, exact = settings["noise"], settings.get("sampling") == "exact"
    rows.same_text("noise", noise)
    rows.close("sigma", settings["sigma"], _SHORT)
    rows.close("scale", settings["scale"])
    count, n = rows.ints("count"), rows.ints("n")
    # the runner-up's votes are written where a bound uses them; the others do not need them
    count_b = rows.ints("count_b") if "count_b" in table.header else np.zeros_like(count)
    rows.require((count >= 0) & (count <= n), "count", "is not between 0 and n")
    rows.require((count_b >= 0) & (count + count_b <= n), "count_b", "exceeds n - count")
    top = rows.ints("top_class")
    rows.require((top >= 0) & (top < settings["num_classes"]), "top_class", "is not a class")
    if exact:
        rows.close("n0", 0)
        rows.close("alpha", 0)
        rows.require(n == settings["n"], "n", f"is not the run's L = {settings['n']}")
        runner_up = rows.ints("runner_up")
        rows.close("pa_lower", count / n)
        rows.close("pb_upper", count_b / n)
        radius = certificates.dssn(count, count_b, top, runner_up, settings["grid"])
        expected = {"radius_dssn": radius}
        predict = top
    else:
        rows.close("n0", settings["n0"])
        rows.close("alpha", settings["alpha"], _SHORT)
        ends = _ends(rows, settings, count, count_b, n)
        rows.close("pa_lower", ends.pa_lower)
        if "pb_upper" in table.header:
            rows.close("pb_upper", ends.pb_upper)
        radii = sequential.radii(ends, noise, settings["scale"])
        expected = {f"radius_{b}": r for b, r in radii.items()}
        predict = np.where(ends.pa_lower > 0.5, top, ABSTAIN)
    for column, values in expected.items():
        rows.close(column, values)
    rows.close("radius", expected[f"radius_{noise_class(noise).bounds[0]}"])
    rows.require(rows.ints("predict") == predict, "predict", "is not what its counts give")
    label = rows.ints("label")
    if labels is not None:
        truth = np.array([labels.get(idx, -2) for idx in rows.idx])
        rows.require(label == truth, "label", "is not the dataset's")
    correct = ((predict != ABSTAIN) & (predict == label)).astype(int)
    rows.require(rows.ints("correct") == correct, "correct", "disagrees with predict and label")


def _ends(rows, settings: dict, count, count_b, n) -> sequential.Ends:
    """The bounds certify computed: at n for fixed sampling, at the row's look for sequential."""
    looks = settings.get("looks") if settings.get("sampling") == "sequential" else None
    if looks is None:
        looks = [settings["n"]]
        rows.require(n == settings["n"], "n", f"is not the run's n = {settings['n']}")
    where = np.searchsorted(looks, n)
    known = (where < len(looks)) & (np.asarray(looks)[np.minimum(where, len(looks) - 1)] == n)
    rows.require(known, "n", "is not one of the run's looks")
    return sequential.bounds(
        count, count_b, where, list(looks), settings["alpha"], settings["num_classes"],
        project=False,
    )  # fmt: skip


class _Columns:
    """A table's columns as arrays, and the refusal that names file, idx and column."""

    def __init__(self, path, table: Table):
        self.path, self.table = path, table
        self.idx = np.array(list(table.rows))

    def text(self, column: str) -> list[str]:
        if column not in self.table.header:
            raise L1CertError(f"{self.path}: no column {column}")
        return self.table.column(column, str)

    def ints(self, column: str) -> np.ndarray:
        values = self.text(column)
        try:
            return np.array([int(v) for v in values])
        except ValueError:
            bad = next(i for i, v in enumerate(values) if not v.lstrip("-").isdigit())
            self.refuse(bad, column, f"{values[bad]!r} is not an integer")

    def floats(self, column: str) -> np.ndarray:
        values = self.text(column)
        try:
            return np.array([float(v) for v in values])
        except ValueError:
            bad = next(i for i, v in enumerate(values) if not _is_float(v))
            self.refuse(bad, column, f"{values[bad]!r} is not a number")

    def close(self, column: str, expected, rtol: float = _RTOL) -> None:
        found = self.floats(column)
        expected = np.broadcast_to(np.asarray(expected, dtype=float), found.shape)
        ok = np.isclose(found, expected, rtol=rtol, atol=_ATOL)
        self.require(ok, column, "is not what its counts and settings give", expected)

    def same_text(self, column: str, value: str) -> None:
        self.require(np.array(self.text(column)) == value, column, f"is not the run's {value}")

    def require(self, ok, column: str, why: str, expected=None) -> None:
        ok = np.asarray(ok)
        if not ok.all():
            first = int(np.argmin(ok))
            shown = "" if expected is None else f" (expected {float(expected[first]):.10g})"
            self.refuse(first, column, f"{why}{shown}")

    def refuse(self, row: int, column: str, why: str):
        value = self.text(column)[row]
        raise L1CertError(
            f"{self.path}: idx {self.idx[row]}: {column} {value!r} {why}; the row was not "
            "written by this run's certify: remove the file (or its partial) and certify again"
        )


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
