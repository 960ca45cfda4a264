"""Sequential against fixed sampling on the default experiment's trained digits models.

Each model's test points (every `--skip`-th) are certified twice with the same seed, n0 = 100
and n = 100 000 (the cap of sequential sampling): `--sampling fixed` (Cohen et al.'s CERTIFY)
and `--sampling sequential --radii <report.radii>`. Printed per model and in total: forward
passes (selection and estimation draws), wall time, the draws per point (median, 90th
percentile), the share of points that ran to the cap, and the largest difference between the
two certified-accuracy tables (every bound, every report radius, in points of %).

    snakemake --profile workflow/profiles/default          # trains the models first
    python benchmarks/certify_sequential.py [--skip 4] [--models results/models/digits] [--repeat 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from readme_blocks import command, machine, made_by, spaced, span, table, write

from l1cert import sequential
from l1cert.certify import certify_to_tsv
from l1cert.labels import noise_label
from l1cert.runs import read_run
from l1cert.utils import parse_radii

ROOT = Path(__file__).resolve().parents[1]
ALPHA = 0.001


def certify(model: Path, out: Path, sampling: str, radii, skip: int, n: int, repeat: int):
    """The certificates and the shortest wall time of `repeat` identical runs (a shared
    machine's pauses only ever add time)."""
    extra = {"radii": radii} if sampling == "sequential" else {}
    times = []
    for i in range(repeat):
        start = time.perf_counter()
        path = out.with_name(f"{out.stem}-{i}{out.suffix}")
        certify_to_tsv(model, path, n0=100, n=n, alpha=ALPHA, batch=1000, seed=0, skip=skip,
                       sampling=sampling, progress=False, **extra)  # fmt: skip
        times.append(time.perf_counter() - start)
    return read_run(path), min(times)


def reach_at_cap(seq, radii, n: int) -> np.ndarray:
    """Per point: True where some bound certifies the top bucket that only the cap can reach
    (with every draw a vote for ĉA, the look before the cap would certify less)."""
    from l1cert import bounds
    from l1cert.noise import make_noise
    from l1cert.stats import lower_confidence_bound

    looks = sequential.looks(n)
    alphas = sequential.look_alphas(ALPHA, len(looks))
    scale = make_noise(seq.noise, seq.sigma).scale
    grid = np.asarray(radii)
    best = [lower_confidence_bound(m, m, a) for m, a in zip(looks[-2:], alphas[-2:], strict=True)]
    found = np.zeros(seq.points, dtype=bool)
    for bound in seq.bounds:
        if bounds.BOUNDS[bound].needs_point:  # its reach depends on the point: not split here
            continue
        top = [int((bounds.radius(bound, seq.noise, scale, p, 1 - p) >= grid).sum())
               for p in best]  # fmt: skip
        if top[1] > top[0]:
            found |= (seq.bound_radii[bound][:, None] >= grid).sum(axis=1) == top[1]
    return found


def draws(run_path: Path) -> np.ndarray:
    from l1cert.certify_format import read_rows

    table = read_rows(run_path)
    return np.asarray(table.column("n0", int)) + np.asarray(table.column("n", int))


def summary(records: list[dict], n: int, threads: int, repeat: int) -> str:
    """The README's block: forward passes and wall time, fixed against sequential, in total, per
    noise and per σ, and why points ran to the cap."""

    def totals(group):
        """Draws and seconds, fixed and sequential, summed over the group's models."""
        return [sum(r[key] for r in group) for key in ("fixed_draws", "seq_draws", "fixed_s",
                                                        "seq_s")]  # fmt: skip

    fixed, seq, t_fixed, t_seq = totals(records)
    rows = [[f"all {len(records)}", f"{fixed / 1e6:.0f} M / {seq / 1e6:.0f} M: "
             f"{fixed / seq:.1f}× fewer", f"{t_fixed:.0f} s / {t_seq:.0f} s: "
             f"{t_fixed / t_seq:.1f}× shorter"]]  # fmt: skip
    by_noise = {}
    for r in records:
        by_noise.setdefault(r["noise"], []).append(r)
    for noise, group in by_noise.items():
        f, s_, tf, ts = totals(group)
        rows.append([noise_label(noise), f"{f / s_:.1f}× fewer", f"{tf / ts:.1f}×"])
    sigmas = sorted({r["sigma"] for r in records}, key=float)
    by_sigma = [totals([r for r in records if r["sigma"] == s]) for s in sigmas]
    rows.append([f"σ = {' / '.join(sigmas)}",
                 " / ".join(f"{f / s_:.1f}×" for f, s_, *_ in by_sigma) + " fewer",
                 " / ".join(f"{tf / ts:.1f}×" for *_, tf, ts in by_sigma)])  # fmt: skip
    worst = max(records, key=lambda r: r["diff"])
    points = {r["points"] for r in records}
    return "\n".join([
        f"Measured with `{command(readme=False)}` on the default experiment's {len(records)} "
        f"Monte Carlo digits models ({span(points, '{:d}')} test points each, n0 = 100, "
        f"n = {spaced(n)}, α = {ALPHA}; {machine()}, {threads} threads; wall time the shortest "
        f"of {repeat} runs):",
        "",
        table(["models", "forward passes, fixed / sequential", "wall time"], rows),
        "",
        f"The certified-accuracy tables of the two runs differed by at most {worst['diff']:.2f} "
        f"points in any cell, for any bound and radius (one test point of "
        f"{worst['points']} is {100 / worst['points']:.2f} points). Median draws per point: "
        + "; ".join(f"{noise_label(noise)} {span([r['median'] for r in group], spaced)}"
                    for noise, group in by_noise.items())  # fmt: skip
        + ". Share of a model's points that ran to the cap because only the cap reaches the "
        "table's top bucket of a point-free bound / for another reason (within the cap's margin "
        "of a bucket edge, or a box bound's top bucket): "
        + "; ".join(f"{noise_label(noise)} {span([100 * r['top'] for r in group], '{:.0f}')} % / "
                    f"{span([100 * r['edge'] for r in group], '{:.0f}')} %"
                    for noise, group in by_noise.items())  # fmt: skip
        + ".",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=str(ROOT / "results/models/digits"))
    parser.add_argument("--skip", type=int, default=4, help="every skip-th test point")
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="time each run this often")
    parser.add_argument("--readme", action="store_true", help="write the results into README.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    radii = parse_radii(yaml.safe_load((ROOT / "params.yaml").read_text())["report"]["radii"])
    models = sorted(Path(args.models).glob("*/model.pt"))
    models = [m for m in models if not m.parent.name.startswith("dssn-")]  # exact, no sampling
    if not models:
        raise SystemExit(f"no models under {args.models}: run the default experiment first")

    print(
        f"digits, every {args.skip}-th test point, n0 = 100, n = {args.n:,} (fixed; the cap "
        f"of sequential), alpha = {ALPHA}, {args.threads} threads, radii {radii}; wall time: "
        f"the shortest of {args.repeat} run(s)"
    )
    print(
        f"{'model':<24}{'fixed draws':>13}{'seq draws':>12}{'ratio':>7}{'fixed s':>9}"
        f"{'seq s':>8}{'median':>8}{'p90':>8}{'at cap':>8}{'max diff':>10}  at cap because"
    )
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = model.parent.name
            fixed, t_fixed = certify(model, Path(tmp) / f"{name}-fixed.tsv", "fixed", radii,
                                     args.skip, args.n, args.repeat)  # fmt: skip
            seq, t_seq = certify(model, Path(tmp) / f"{name}-seq.tsv", "sequential", radii,
                                 args.skip, args.n, args.repeat)  # fmt: skip
            d_fixed, d_seq = draws(fixed.path).sum(), draws(seq.path)
            diff = max(float(np.abs(fixed.accuracy(b, radii) - seq.accuracy(b, radii)).max())
                       for b in fixed.bounds) * 100  # fmt: skip
            capped = d_seq - 100 >= args.n
            reach = capped & reach_at_cap(seq, radii, args.n)
            record = dict(noise=seq.noise, sigma=f"{seq.sigma:g}", points=seq.points,
                          fixed_draws=int(d_fixed), seq_draws=int(d_seq.sum()), fixed_s=t_fixed,
                          seq_s=t_seq, median=float(np.median(d_seq)), diff=diff,
                          top=float(reach.mean()),
                          edge=float((capped & ~reach).mean()))  # fmt: skip
            records.append(record)
            print(
                f"{name:<24}{d_fixed:>13,}{d_seq.sum():>12,}{d_fixed / d_seq.sum():>7.1f}"
                f"{t_fixed:>9.1f}{t_seq:>8.1f}{np.median(d_seq):>8.0f}"
                f"{np.percentile(d_seq, 90):>8.0f}{capped.mean():>8.0%}{diff:>9.2f}pt"
                f"  top bucket {record['top']:.0%}, bucket edge {record['edge']:.0%}"
            )
    text = summary(records, args.n, args.threads, args.repeat)
    print(text)
    if args.readme:
        write({"sequential": text}, made_by(models))


if __name__ == "__main__":
    main()
