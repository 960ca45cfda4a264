"""The README's measured numbers, written by the scripts that measure them.

Every number README.md quotes from a run sits in a block

    <!-- measured: NAME -->
    <!-- made by code DIGEST: COMMAND -->
    ...
    <!-- end: NAME -->

that COMMAND (a script of benchmarks/ with `--readme`) writes from its own measurement,
recording the digest of the code that decides the models and their certificates (the train and
certify stages' modules). `tests/test_readme.py` fails when a block was made by other code, so
a change to what decides a number is not done until the benchmarks that quote it have been
rerun. The prose around a block says what to read in it and quotes no number of its own.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
sys.path.insert(0, str(ROOT / "src"))

from l1cert.provenance import code_digest  # noqa: E402
from l1cert.utils import atomic_write_text  # noqa: E402

BLOCK = re.compile(
    r"<!-- measured: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- end: (?P=name) -->\n", re.S
)
MADE_BY = re.compile(r"<!-- made by code (?P<digest>\w+): (?P<command>.+) -->")


def current_code() -> str:
    """The digest (16 hex digits) of the code that decides what the benchmarks measure."""
    return code_digest("train", "certify")["sha256"][:16]


def render(readme: str, blocks: dict[str, str], command: str, digest: str) -> str:
    """`readme` with the named blocks' bodies replaced (each must be there already)."""
    missing = set(blocks) - {m["name"] for m in BLOCK.finditer(readme)}
    if missing:
        sys.exit(f"README.md has no block {', '.join(sorted(missing))} for {command}")

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            return match.group(0)
        body = blocks[name].rstrip("\n")
        return (f"<!-- measured: {name} -->\n<!-- made by code {digest}: {command} -->\n"
                f"{body}\n<!-- end: {name} -->\n")  # fmt: skip

    return BLOCK.sub(fill, readme)


def write(blocks: dict[str, str], command: str, readme: Path = README) -> None:
    """Write the blocks into README.md as made by the current code and `command`."""
    atomic_write_text(readme, render(readme.read_text(), blocks, command, current_code()))
    print(f"wrote {', '.join(blocks)} into {readme}", file=sys.stderr)


def table(head: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    """A Markdown table, columns from `numeric_from` on right-aligned."""
    rule = ["---" if i < numeric_from else "---:" for i in range(len(head))]
    lines = ["| " + " | ".join(cells) + " |" for cells in [head, *rows]]
    return "\n".join([lines[0], "|" + "|".join(rule) + "|", *lines[1:]])


def spaced(number: float) -> str:
    """10000 -> '10 000': thousands apart, as the README writes them."""
    return f"{number:,.0f}".replace(",", " ")


def span(values, fmt="{:.1f}", unit: str = "") -> str:
    """'a–b' of the smallest and largest value (one value if they print alike); `fmt` a format
    string or a function."""
    show = fmt if callable(fmt) else fmt.format
    low, high = show(min(values)), show(max(values))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"
