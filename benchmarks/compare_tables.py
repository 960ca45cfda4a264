"""Do two runs of an experiment give the same tables? (e.g. the default experiment before and
after a refactoring that must not change a number)

    python benchmarks/compare_tables.py OLD/results NEW/results

Compares the report's CSV tables cell by cell, leaving out the seconds (wall time differs from
run to run); forward passes and every accuracy, ACR and abstention rate must be equal. Prints
the cells compared and each difference; exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

TABLES = ("certified-accuracy", "envelope", "cost")
TIMES = ("certify_seconds", "train_seconds")


def read(path: Path) -> tuple[list[str], list[dict]]:
    with open(path) as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def compare(old: Path, new: Path) -> tuple[int, list[str]]:
    """(cells compared, differences) over the tables of two report folders."""
    cells, differences = 0, []
    for name in TABLES:
        (old_header, old_rows), (new_header, new_rows) = (
            read(root / "tables" / f"{name}.csv") for root in (old, new)
        )
        if old_header != new_header:
            differences.append(f"{name}: columns {old_header} vs {new_header}")
            continue
        if len(old_rows) != len(new_rows):
            differences.append(f"{name}: {len(old_rows)} rows vs {len(new_rows)}")
            continue
        for i, (a, b) in enumerate(zip(old_rows, new_rows, strict=True)):
            for column in old_header:
                if column in TIMES:
                    continue
                cells += 1
                if a[column] != b[column]:
                    differences.append(f"{name} row {i + 2} {column}: {a[column]} vs {b[column]}")
    return cells, differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the first run's results/ (the baseline)")
    parser.add_argument("new", type=Path, help="the second run's results/")
    args = parser.parse_args()
    cells, differences = compare(args.old, args.new)
    for line in differences:
        print(line)
    print(f"{cells} cells compared (seconds left out): {len(differences)} differ")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
