"""Which code decides a result: each pipeline stage's modules, and a digest of them.

A stage's code is the import closure of the module that does its work (`STAGE_MODULES`), less
the plumbing (`PLUMBING`: modules that parse options, declare settings, check, lock, move or
describe files and print messages, and decide no number). Both engines take a stage's code as
its dependencies (Snakemake's inputs, DVC's deps), so a help text or a message edited reruns
nothing, and a certify sidecar records the digest of the certify stage's code, so a resume or
merge under other code is refused instead of mixing versions. Torch-free: it reads source files,
it imports nothing.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from l1cert import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str) -> Path:
    """`l1cert.shards` -> .../l1cert/shards.py (`l1cert` -> its __init__.py)."""
    parts = module.split(".")[1:]
    return PACKAGE_DIR.joinpath(*parts).with_suffix(".py") if parts else PACKAGE_DIR / "__init__.py"


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The l1cert modules a file imports (anywhere in it, or at module level only); imports
    made only for type checkers (`if TYPE_CHECKING:`) run nothing and do not count."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(_without_type_checking(tree))
    return _imported(nodes)


def _without_type_checking(tree: ast.Module) -> ast.Module:
    for node in ast.walk(tree):
        for name in ("body", "orelse"):
            block = getattr(node, name, None)
            if isinstance(block, list):
                setattr(node, name, [n for n in block if not _type_checking(n)])
    return tree


def _type_checking(node) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imported(nodes) -> set[str]:
    """The l1cert modules that these AST nodes import."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "l1cert":
            found.add(node.module)
            # `from l1cert import figures` names a module, `from l1cert import __version__` not
            found.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if module_file(f"{node.module}.{alias.name}").is_file()
            )
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "l1cert")
    return found


@functools.cache
def import_closure(module: str, stop: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Every l1cert module that running `module` may import, itself and the package included;
    modules in `stop` are neither included nor followed.

    Imports inside functions count too (l1cert imports torch-heavy modules where they are used).
    """
    seen, todo = {"l1cert"}, [module]
    while todo:
        name = todo.pop()
        if name in seen or name in stop:
            continue
        seen.add(name)
        todo.extend(_imports(module_file(name), top_level_only=False) - seen)
    return tuple(sorted(seen))


# The module that does each pipeline stage's work.
STAGE_MODULES = {
    "data": "l1cert.data",
    "train": "l1cert.train",
    "import": "l1cert.foreign",
    "certify": "l1cert.certify",
    "merge": "l1cert.merge",
    "report": "l1cert.report",
}
# Modules that decide no number of any result: the command line, the settings' declaration and
# its machinery (their values reach each job as its params), checks that refuse rows, the
# resume and publish protocols, names and small helpers, and this bookkeeping.
PLUMBING = frozenset(
    f"l1cert.{name}"
    for name in (
        "cli",
        "config",
        "names",
        "pipeline",
        "provenance",
        "rederive",
        "resume",
        "transaction",
        "utils",
    )  # fmt: skip
)


def stage_code(stage: str) -> tuple[str, ...]:
    """The modules that decide a stage's results (see the module docstring)."""
    return tuple(m for m in import_closure(STAGE_MODULES[stage], PLUMBING) if m != "l1cert")


def code_digest(*stages: str) -> dict:
    """{'version', 'sha256'}: the package version and a digest of the code of the stages
    (certify's by default; several: the union of their modules)."""
    digest = hashlib.sha256()
    for name in sorted({m for stage in stages or ("certify",) for m in stage_code(stage)}):
        digest.update(name.encode() + b"\0" + module_file(name).read_bytes() + b"\0")
    return {"version": __version__, "sha256": digest.hexdigest()}
