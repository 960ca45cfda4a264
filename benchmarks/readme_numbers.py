"""Write the default experiment's numbers into README.md from its results, so that the README
quotes a run of the current code and nothing typed by hand.

    snakemake --profile workflow/profiles/default        # the default experiment
    python benchmarks/readme_numbers.py                  # its numbers into README.md
    python benchmarks/readme_numbers.py --check          # exit 1 if README.md is not current

Each generated block sits between `<!-- default-run: NAME -->` and `<!-- end: NAME -->` and
records the code digest of the certify stage that made the run; `tests/test_readme.py` checks
that this digest is the current code's, so a change to what decides a number fails the tests
until the default experiment is rerun and this script writes its numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from l1cert.labels import bound_label, training_label  # noqa: E402
from l1cert.provenance import code_digest  # noqa: E402

BLOCK = re.compile(r"<!-- default-run: (?P<name>[\w-]+) -->\n.*?<!-- end: (?P=name) -->", re.S)


def _envelope(results: Path) -> tuple[list[str], list[dict]]:
    with open(results / "tables" / "envelope.csv") as f:
        rows = list(csv.DictReader(f))
    radii = list(dict.fromkeys(r["radius"] for r in rows))
    return radii, rows


def _sidecars(results: Path) -> list[dict]:
    files = sorted((results / "certify").glob("*/*.json"))
    if not files:
        sys.exit(f"no merged certify files under {results}/certify: run the default experiment")
    return [json.loads(p.read_text()) for p in files]


def _digest(sidecars: list[dict]) -> str:
    digests = {side["result"]["code"]["sha256"] for side in sidecars}
    if len(digests) != 1:
        sys.exit("the certify files were made by different code: rerun the default experiment")
    return digests.pop()


def _spaced(number: float) -> str:
    """10000 -> '10 000': thousands apart, as the README writes them."""
    return f"{number:,.0f}".replace(",", " ")


def envelope_table(results: Path, digest: str) -> str:
    """The envelope over σ per training and bound: certified accuracy (%) at each radius, the
    best ACR over σ and the forward passes per point (mean over the σ models)."""
    radii, rows = _envelope(results)
    summary = json.loads((results / "summary-full.json").read_text())
    keys = list(dict.fromkeys((r["training"], r["bound"]) for r in rows))
    head = ["training", "certificate", *(f"r = {r}" for r in radii), "ACR", "passes / point"]
    lines = [
        f"<!-- made by code {digest[:16]}: python benchmarks/readme_numbers.py -->",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 2 + "---:|" * (len(radii) + 2),
    ]
    for training, bound in keys:
        cells = {r["radius"]: r for r in rows if (r["training"], r["bound"]) == (training, bound)}
        found = summary[f"{training}/{bound}"]
        accuracy = [f"{100 * float(cells[r]['certified_accuracy']):.1f}" for r in radii]
        passes = "" if found["passes"] is None else _spaced(found["passes"])
        lines.append(
            "| "
            + " | ".join(
                [
                    training_label(training),
                    bound_label(bound),
                    *accuracy,
                    f"{found['acr']:.3f}",
                    passes,
                ]
            )
            + " |"  # fmt: skip
        )
    return "\n".join(lines)


def run_settings(sidecars: list[dict], digest: str) -> str:
    """One line: the default run's models, test points and sampling."""
    sampled = [s["result"] for s in sidecars if s["result"]["n0"] is not None]
    sigmas = sorted({s["result"]["sigma"] for s in sidecars})
    points = {s["part"]["total_points"] for s in sidecars}
    caps = {r["n"] for r in sampled}
    modes = sorted({r["sampling"] for r in sampled})
    return (
        f"<!-- made by code {digest[:16]}: python benchmarks/readme_numbers.py -->\n"
        f"*The default run ({len(sidecars)} models; {', '.join(modes)} sampling, n ≤ "
        f"{_spaced(max(caps))} draws per point; DSSN exact): the best certified accuracy over "
        f"σ ∈ {{{', '.join(f'{s:g}' for s in sigmas)}}} at each ℓ1 radius on the "
        f"{max(points)} test digits, for each certificate*"
    )


def render(readme: str, results: Path, sidecars: list[dict] | None = None) -> str:
    """`readme` with its blocks written from the run in `results` (its merged sidecars, if
    already read)."""
    sidecars = _sidecars(results) if sidecars is None else sidecars
    digest = _digest(sidecars)
    blocks = {"envelope": envelope_table(results, digest),
              "settings": run_settings(sidecars, digest)}  # fmt: skip

    def fill(match: re.Match) -> str:
        name = match["name"]
        if name not in blocks:
            sys.exit(f"README.md has a block {name!r} this script does not write")
        return f"<!-- default-run: {name} -->\n{blocks[name]}\n<!-- end: {name} -->"

    return BLOCK.sub(fill, readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not current")
    args = parser.parse_args()
    current = code_digest("certify")["sha256"]
    sidecars = _sidecars(args.results)
    made = _digest(sidecars)
    if made != current:
        sys.exit(f"{args.results} was made by code {made[:16]}, not the current {current[:16]}: "
                 "rerun the default experiment first")  # fmt: skip
    text = args.readme.read_text()
    new = render(text, args.results, sidecars)
    if args.check:
        print("README.md is current" if new == text else "README.md is not current")
        sys.exit(0 if new == text else 1)
    args.readme.write_text(new)
    print(f"wrote {len(BLOCK.findall(new))} blocks into {args.readme}")


if __name__ == "__main__":
    main()
