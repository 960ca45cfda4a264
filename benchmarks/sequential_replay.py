"""Stopping rules replayed on the default experiment's own points: draws saved, tables moved.

Step 1 (once, cached in `--cache`): for each trained digits model and every `--skip`-th test
point, the votes of every class among n = 100 000 noisy copies (about 6 minutes on 2 cores).
Step 2: each point's vote shares stand for its true class probabilities; per look, a
multinomial stream is drawn from them and shared by fixed-n CERTIFY (its first n draws) and
the sequential rule, as one generator per point shares it in `l1cert certify`. Printed per
rule: forward passes fixed / sequential (n0 = 100 included) over all models, on σ = 1.0, per
noise at σ = 1.0, the worst certified-accuracy cell over all runs, and how many
(run, model, bound, radius) cells moved by two test points or more (runs × 24 models).
`benchmarks/certify_sequential.py` measures the same rule on the real models: its ratios
(5.03 in total, 5.5 on σ = 1.0) agree with this replay's (4.93, 5.26) to within 5 %.

    python benchmarks/sequential_replay.py [--models results/models/digits] [--runs 4]

Every rule but the last two gives rows that are certificates at level 1 − α; "stop on the
primary bound only" does not decide every bound's bucket, as the pipeline's tables need. The
last two are not valid (each look at the full α) and only show how far a rule of this kind could
go: the cost of looking repeatedly is not what limits it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from pathlib import Path
from unittest import mock

import numpy as np
import simulation  # benchmarks/simulation.py, beside this script

from l1cert import sequential
from l1cert.noise import make_noise

ROOT = Path(__file__).resolve().parents[1]
GRID = [0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
ALPHA, CAP, N0 = 0.001, 100_000, 100


def vote_counts(models: Path, skip: int, cache: Path) -> dict:
    """{model name: (votes (points, classes), label per point)}, counted once and cached."""
    if cache.exists():
        with np.load(cache) as saved:
            return {name: (saved[f"{name}/votes"], saved[f"{name}/labels"])
                    for name in {key.split("/")[0] for key in saved.files}}  # fmt: skip
    import torch
    from tqdm import tqdm

    from l1cert import data
    from l1cert import models as model_io
    from l1cert.points import point_generator, select_indices
    from l1cert.smoothing import Smooth

    paths = sorted(models.glob("*/model.pt"))
    if not paths:
        raise SystemExit(f"no models under {models}: run the default experiment first")
    test_set = data.load_split("digits", "test", ROOT / "data")
    indices = select_indices(len(test_set), skip, -1)
    out = {}
    for path in tqdm(paths, desc="votes of n = 100 000 draws per point", unit="model"):
        model, meta = model_io.load_model(path)
        smooth = Smooth(model, meta["num_classes"], meta["noise"], meta["sigma"])
        cpu = torch.device("cpu")
        votes = [smooth._count(test_set[i][0], CAP, 1000, point_generator(0, i, cpu))
                 for i in indices]  # fmt: skip
        labels = [int(test_set[i][1]) for i in indices]
        out[path.parent.name] = (np.array(votes), np.array(labels))
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **{f"{k}/{part}": v for k, (votes, labels) in out.items()
                       for part, v in (("votes", votes), ("labels", labels))})  # fmt: skip
    return out


def table(b: sequential.Ends, noise: str, scale: float, correct) -> np.ndarray:
    """Certified test points per (bound, radius)."""
    rows = []
    for name in make_noise(noise, 1.0).bounds:
        k = sequential.bucket(name, noise, scale, *sequential.lower_ends(name, b), GRID)
        rows.append([np.sum((k > j) & correct) for j in range(len(GRID))])
    return np.array(rows)


def replay(counts: dict, runs: int, looks: list[int]) -> dict:
    """Per model: (fixed draws, sequential draws, worst cell in points, cells moved by ≥ 2)."""
    result = {}
    for m, (name, (votes, labels)) in enumerate(sorted(counts.items())):
        noise, _, sigma = name.split("-")
        scale = make_noise(noise, float(sigma[1:])).scale
        order = np.argsort(-votes, axis=1, kind="stable")  # class 0 is then ĉA
        probs = np.take_along_axis(votes, order, 1) / votes.sum(1, keepdims=True)
        correct = order[:, 0] == labels
        fixed = sequential_draws = worst = moved = 0
        for run in range(runs):
            stream = simulation.draw_counts(probs, looks, np.random.default_rng([run, m]))
            stop, b = simulation.run(stream, looks, ALPHA, votes.shape[1], noise, scale, GRID)
            at_cap = stream[-1]
            fb = sequential.ends(at_cap[:, 0], at_cap[:, 1:].max(-1), 0, [CAP], ALPHA,
                                   votes.shape[1])  # fmt: skip
            diff = np.abs(table(b, noise, scale, correct) - table(fb, noise, scale, correct))
            worst = max(worst, diff.max() / len(votes))
            moved += int((diff >= 2).sum())
            fixed += len(votes) * (N0 + CAP)
            sequential_draws += int(np.sum(N0 + np.asarray(looks)[stop]))
        result[name] = (fixed, sequential_draws, worst, moved)
    return result


def show(label: str, result: dict) -> None:
    def ratio(pick) -> float:
        keys = [k for k in result if pick(k)]
        if not keys:  # a subset of the models (--models)
            return float("nan")
        return sum(result[k][0] for k in keys) / sum(result[k][1] for k in keys)

    top = {n: ratio(lambda k, n=n: k.startswith(n) and k.endswith("s1.0"))
           for n in ("gaussian", "laplace", "uniform")}  # fmt: skip
    worst = 100 * max(v[2] for v in result.values())
    moved = sum(v[3] for v in result.values())
    print(
        f"{label:<52}{ratio(lambda k: True):6.2f}{ratio(lambda k: k.endswith('s1.0')):7.2f}"
        + "".join(f"{v:6.1f}" for v in top.values())
        + f"{worst:9.2f}pt{moved:7d}",
        flush=True,
    )


def with_levels(**levels):
    """A patch that runs `sequential.ends` at other levels (upper_alpha, last_share)."""
    return mock.patch.object(sequential, "ends", functools.partial(sequential.ends, **levels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=ROOT / "results/models/digits")
    parser.add_argument("--skip", type=int, default=2, help="every skip-th test point")
    parser.add_argument("--cache", type=Path, default=ROOT / "results/benchmarks/votes.npz")
    parser.add_argument("--runs", type=int, default=4, help="streams drawn per model")
    args = parser.parse_args()
    counts = vote_counts(args.models, args.skip, args.cache)
    looks = sequential.looks(CAP)
    plain_upper = mock.patch.object(sequential, "_share_at_cap", lambda c, end, n, cap: end)
    primary_only = mock.patch.object(
        sequential, "_bound_names", lambda noise: make_noise(noise, 1.0).bounds[:1]
    )
    full_alpha = mock.patch.object(
        sequential, "look_alphas", lambda alpha, num_looks, *_: np.full(num_looks, alpha)
    )
    rules = [  # label, patches, looks
        ("this rule: CP, 0.9α at the cap, upper 0.2, predicted", [], looks),
        ("  projection of the plain upper bound (before)", [plain_upper], looks),
        ("  upper 0.3", [with_levels(upper_alpha=0.3)], looks),
        ("  upper 1.0", [with_levels(upper_alpha=1.0)], looks),
        ("  0.8α at the cap", [with_levels(last_share=0.8)], looks),
        ("  looks growing 1.5×", [], sequential.looks(CAP, growth=1.5)),
        ("  stop on the primary bound only (Laplace: teng)", [primary_only], looks),
        ("not valid: full α at every look", [full_alpha], looks),
        ("not valid: full α at every look, upper 1.0",
         [full_alpha, with_levels(upper_alpha=1.0)], looks),
    ]  # fmt: skip
    print(f"{len(counts)} models, {args.runs} streams each, n0 = {N0}, cap {CAP:,}, α = {ALPHA}")
    print(f"{'rule':<52}{'all':>6}{'σ=1':>7}{'G@1':>6}{'L@1':>6}{'U@1':>6}{'worst':>11}"
          f"{'moved':>7}")  # fmt: skip
    for label, patches, looks_ in rules:
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            show(label, replay(counts, args.runs, looks_))


if __name__ == "__main__":
    main()
