"""The README's measured numbers, written by the scripts that measure them.

Every number README.md quotes from a run sits in a block

    <!-- measured: NAME -->
    <!-- made by code DIGEST: COMMAND -->
    ...
    <!-- end: NAME -->

that COMMAND (a script of benchmarks/ with `--readme`) writes from its own measurement,
recording the digest of the code that decides the models and their certificates (the train and
certify stages' modules), once it has checked that its models and certify files were made by
that code (`made_by`). `tests/test_readme.py` fails when a block was made by other code, so
a change to what decides a number is not done until the benchmarks that quote it have been
rerun. The prose around a block says what to read in it and quotes no number of its own.
"""

from __future__ import annotations

import json
import os
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


def made_by(models=(), certified=()) -> str:
    """The digest to record for a measurement: the current code's, once every model it used
    was trained by the current train code (its checkpoint's `code`) and every certify file it
    read (the sidecars) was made by the current certify code; otherwise exit, naming the stale
    input."""
    from l1cert.models import load_checkpoint

    train, certify = code_digest("train")["sha256"], code_digest("certify")["sha256"]
    for path in models:
        if (load_checkpoint(path)["meta"].get("code") or {}).get("sha256") != train:
            sys.exit(f"{path} was trained by other code: retrain it (the default experiment)")
    for path in certified:
        if json.loads(Path(path).read_text())["result"]["code"]["sha256"] != certify:
            sys.exit(f"{path} was certified by other code: rerun the run that made it")
    return current_code()


def made_by_run(results: Path) -> str:
    """`made_by` for a pipeline run's results/: its models and its merged certify files."""
    return made_by(sorted(results.glob("models/*/*/model.pt")),
                   sorted(results.glob("certify/*/*.json")))  # fmt: skip


def command(readme: bool = True) -> str:
    """The running benchmark's command line, as the README quotes it (`readme`: with its
    `--readme`, which writes the block; without, the measurement alone)."""
    args = [a for a in sys.argv[1:] if readme or a != "--readme"]
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *args])


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


def write(blocks: dict[str, str], digest: str, readme: Path = README) -> None:
    """Write the blocks into README.md as made by the code of `digest` (`made_by`) and this
    command."""
    atomic_write_text(readme, render(readme.read_text(), blocks, command(), digest))
    print(f"wrote {', '.join(blocks)} into {readme}", file=sys.stderr)


def machine() -> str:
    """'2-core AMD EPYC CPU without native bf16': the CPU a measurement ran on."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        info = ""
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                  if line.startswith("model name")), "")  # fmt: skip
    native = any(flag in info.split() for flag in ("avx512_bf16", "amx_bf16"))
    return (f"{os.cpu_count()}-core {model + ' ' if model else ''}CPU "
            f"{'with' if native else 'without'} native bf16")  # fmt: skip


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
    values = list(values)
    if not values:
        return "none"
    show = fmt if callable(fmt) else fmt.format
    low, high = show(min(values)), show(max(values))
    return f"{low}{unit}" if low == high else f"{low}–{high}{unit}"
