"""Rows read back are re-derived, not trusted.

Every derived column of a certify row is recomputed from the row's counts and the run's
settings by the code that certify itself uses — p̲A (and p̄B) from count, n, α and the look
(`sequential.ends`), every radius from them (`sequential.bound_radii`), the exact DSSN radius from
its votes, `predict` and `correct` from the counts and the label, the settings columns from the
sidecar — and the first row that disagrees is refused in one line naming file, idx and column.
Resume (before a partial file is carried on and sealed), merge and the report call it, so a
row edited by hand or by a tool never reaches a table. A digest chained over the rows would
catch edits too, but not a row that was wrong when written; recomputing catches both, and
costs one vectorised pass over the file. Torch-free.
"""

from __future__ import annotations

import math

import numpy as np

from l1cert import sequential
from l1cert.bounds import BOUNDS
from l1cert.certify_format import ABSTAIN, Table, is_integer
from l1cert.noise import noise_class
from l1cert.utils import L1CertError

_RTOL, _ATOL = 1e-8, 1e-12  # rows print floats with 10 significant digits
_SHORT = 1e-5  # and sigma and alpha as %g, six


def check_rows(path, table: Table, result: dict, labels=None, points=None) -> list[str]:
    """Refuse the first row of `table` (read from `path`, a run whose sidecar `result` this is)
    whose derived columns are not what its counts give. `labels`, `points`: the dataset's label
    and input (flattened) of each idx, where the reader has the dataset (resume). Without the
    points a box bound's radius is bracketed, not recomputed: at least the plain bound of the
    same p̲A and p̄B, at most the radius of a point whose every coordinate is ½ (where the box
    binds most) or the box's whole reach; returns the bounds checked only so."""
    from l1cert.sampling import MODES

    if not table.rows:
        return []
    rows = _Columns(path, table)
    bounds = result.get("bounds") or list(noise_class(result["noise"]).bounds)
    noise = result["noise"]
    if result.get("sampling") not in MODES:
        raise L1CertError(f"{path}: unknown sampling {result.get('sampling')!r}")
    mode = MODES[result["sampling"]]
    rows.same_text("noise", noise)
    time = rows.floats("time")
    rows.require(np.isfinite(time) & (time >= 0), "time", "is not a number of seconds")
    rows.close("sigma", result["sigma"], _SHORT)
    rows.close("scale", result["scale"])
    count, n, classes = rows.ints("count"), rows.ints("n"), result["num_classes"]
    # the runner-up's votes are written where a bound uses them; the others do not need them
    count_b = rows.ints("count_b") if "count_b" in table.header else None
    rows.require((count >= 0) & (count <= n), "count", "is not between 0 and n")
    top = rows.ints("top_class")
    rows.require((top >= 0) & (top < classes), "top_class", "is not a class")
    if count_b is not None:
        rows.require(count_b >= 0, "count_b", "is negative")
        rows.require(count + count_b <= n, "count_b", "exceeds n - count")
        # the runner-up has at least its share of the other classes' votes
        share = -(-(n - count) // max(classes - 1, 1)) - 1
        rows.require(count_b >= np.where(classes > 1, share, 0), "count_b",
                     "is below the other classes' share of n - count")  # fmt: skip
    else:
        count_b = np.zeros_like(count)
    if not mode.estimates:
        rows.close("n0", 0)
        rows.close("alpha", 0)
        rows.require(n == result["n"], "n", f"is not the run's {result['n']} copies")
        rows.require(count_b <= count, "count_b", "exceeds count (the prediction is the argmax)")
        runner_up = rows.ints("runner_up")
        rows.require((runner_up >= 0) & (runner_up < classes) & (runner_up != top), "runner_up",
                     "is not a class other than top_class")  # fmt: skip
        rows.close("pa_lower", count / n)
        rows.close("pb_upper", count_b / n)
        expected = {
            f"radius_{b}": BOUNDS[b].radius(count, count_b, top, runner_up, result) for b in bounds
        }
        predict = top
        bracketed = []
    else:
        rows.close("n0", result["n0"])
        rows.close("alpha", result["alpha"], _SHORT)
        ends = _ends(rows, result, mode.looks(result), count, count_b, n)
        rows.close("pa_lower", ends.pa_lower)
        if "pb_upper" in table.header:
            rows.close("pb_upper", ends.pb_upper)
        expected, bracketed = _radii(rows, result, bounds, ends, points)
        predict = np.where(ends.pa_lower > 0.5, top, ABSTAIN)
    for column, values in expected.items():
        rows.close(column, values)
    primary = f"radius_{bounds[0]}"
    rows.close("radius", expected[primary] if primary in expected else rows.floats(primary))
    rows.require(rows.ints("predict") == predict, "predict", "is not what its counts give")
    label = rows.ints("label")
    if labels is not None:
        truth = np.array([labels.get(idx, -2) for idx in rows.idx])
        rows.require(label == truth, "label", "is not the dataset's")
    correct = ((predict != ABSTAIN) & (predict == label)).astype(int)
    rows.require(rows.ints("correct") == correct, "correct", "disagrees with predict and label")
    return bracketed


def _radii(rows, result: dict, bounds, ends, points) -> tuple[dict, list[str]]:
    """Every bound's radius column as certify computed it; a box bound without the points
    bracketed instead (see `check_rows`)."""
    noise, scale = result["noise"], result["scale"]
    expected, bracketed = {}, []
    for name in bounds:
        pa, pb = sequential.lower_ends(name, ends)
        column = f"radius_{name}"
        if not BOUNDS[name].needs_point:
            expected[column] = sequential.radius_and_validity(name, noise, scale, pa, pb)[0]
        elif points is not None:
            at = np.stack([np.asarray(points[idx], dtype=float).ravel() for idx in rows.idx])
            expected[column] = sequential.radius_and_validity(name, noise, scale, pa, pb, at)[0]
        else:
            found = rows.floats(column)
            low = np.where(pa > pb, scale * (pa - pb), 0.0)  # the union bound of the same pair
            halves = np.full((len(found), math.prod(result["input_shape"])), 0.5)
            high = np.maximum(BOUNDS[name].radius(pa, pb, scale, halves), halves.shape[1])
            ok = (found >= low * (1 - _RTOL) - _ATOL) & (found <= high * (1 + _RTOL) + _ATOL)
            rows.require(ok, column, "is not within what its counts allow in the box")
            bracketed.append(name)
    return expected, bracketed


def _ends(rows, result: dict, looks: list[int], count, count_b, n) -> sequential.Ends:
    """The bounds certify computed, at the look (number of draws) each row stopped at."""
    where = np.searchsorted(looks, n)
    known = (where < len(looks)) & (np.asarray(looks)[np.minimum(where, len(looks) - 1)] == n)
    rows.require(known, "n", f"is not one of the run's numbers of draws {looks}")
    return sequential.ends(
        count, count_b, where, list(looks), result["alpha"], result["num_classes"],
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
        bad = next((i for i, v in enumerate(values) if not is_integer(v)), None)
        if bad is not None:
            self.refuse(bad, column, "is not an integer (ASCII digits, a minus sign at most)")
        return np.array([int(v) for v in values], dtype=np.int64)

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
