"""Which code made a result: a module's import closure within l1cert, and a digest of it.

DVC stages depend on the closure of the command they run (tests/test_workflow.py checks
dvc.yaml against it), and a certify sidecar records the digest of the code that decides its
rows' numbers (`ROW_CODE`), so a resume or merge under other code is refused instead of mixing
versions.
Torch-free: it reads source files, it imports nothing.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import keyword
from pathlib import Path

from l1cert import __version__

PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(module: str) -> Path:
    """`l1cert.shards` -> .../l1cert/shards.py (`l1cert` -> its __init__.py)."""
    parts = module.split(".")[1:]
    return PACKAGE_DIR.joinpath(*parts).with_suffix(".py") if parts else PACKAGE_DIR / "__init__.py"


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """The l1cert modules a file imports (anywhere in it, or at module level only)."""
    tree = ast.parse(path.read_text())
    return _imported(tree.body if top_level_only else ast.walk(tree))


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
def import_closure(module: str) -> tuple[str, ...]:
    """Every l1cert module that running `module` may import, itself and the package included.

    Imports inside functions count too (l1cert imports torch-heavy modules where they are used).
    """
    seen, todo = {"l1cert"}, [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_imports(module_file(name), top_level_only=False) - seen)
    return tuple(sorted(seen))


def command_closure(command: str) -> tuple[str, ...]:
    """The modules `l1cert COMMAND` runs: the CLI's module-level imports plus the closure of
    the library modules that the command's function imports."""
    cli = module_file("l1cert.cli")
    tree = ast.parse(cli.read_text())
    # a command named by a Python keyword (`import`) is a function with a trailing underscore
    name = command + "_" if keyword.iskeyword(command) else command
    function = next(
        (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None
    )
    if function is None:
        raise KeyError(f"l1cert has no command {command!r}")
    entry = {"l1cert.cli"} | _imports(cli, top_level_only=True) | _imported(ast.walk(function))
    modules = set()
    for name in entry:
        modules.update(import_closure(name) if name != "l1cert.cli" else (name,))
    return tuple(sorted(modules))


# The modules that decide a certify row's numbers: the noises and their certificates, the
# statistics, the smoothed classifier and its forward pass, the sampling modes, which points a
# shard takes and how they are seeded, the model and the data. Not the resume, publish and merge
# plumbing or the messages around them: editing those keeps partial files resumable.
ROW_CODE = (
    "l1cert.certificates", "l1cert.data", "l1cert.forward", "l1cert.models", "l1cert.noise",
    "l1cert.points", "l1cert.sampling", "l1cert.sequential", "l1cert.smoothing",
    "l1cert.splitting", "l1cert.stats",
)  # fmt: skip


def code_digest(modules: tuple[str, ...] = ROW_CODE) -> dict:
    """{'version', 'sha256'}: the package version and a digest of the source of `modules`."""
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + module_file(name).read_bytes() + b"\0")
    return {"version": __version__, "sha256": digest.hexdigest()}
