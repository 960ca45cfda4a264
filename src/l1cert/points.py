"""Which test points a certify shard takes, and the noise generator each one draws from.

Points are every `skip`-th test index (at most `max`), cut into K contiguous blocks; point `idx`
draws its noise from a generator seeded by (seed, idx), so the merged output of K shards equals
a single run, on every restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from l1cert.utils import L1CertError

if TYPE_CHECKING:
    import torch


def parse_shard(text: str) -> tuple[int, int]:
    """'k/K' (1-based) -> (k, K)."""
    try:
        k, total = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise L1CertError(f"--shard must look like k/K (e.g. 2/4), got {text!r}") from None
    if total < 1 or not 1 <= k <= total:
        raise L1CertError(f"--shard {text}: need 1 <= k <= K")
    return k, total


def select_indices(dataset_size: int, skip: int, max_points: int) -> list[int]:
    """Every skip-th test index, at most max_points of them (-1: all), as Cohen et al. do."""
    indices = list(range(0, dataset_size, skip))
    return indices if max_points < 0 else indices[:max_points]


def shard_block(indices: list[int], k: int, total: int) -> list[int]:
    """Block k (1-based) of `indices` cut into `total` contiguous blocks of near-equal size."""
    size = len(indices)
    return indices[(k - 1) * size // total : k * size // total]


def shard_points(settings: dict) -> list[int]:
    """The test indices of the shard a certify sidecar describes."""
    indices = select_indices(settings["dataset_size"], settings["skip"], settings["max"])
    return shard_block(indices, settings["shard"], settings["shards"])


def point_generator(seed: int, idx: int, device: torch.device) -> torch.Generator:
    """The noise generator of test point idx: the same on every shard and every restart."""
    import torch

    state = np.random.SeedSequence([seed, idx]).generate_state(1, np.uint64)[0]
    return torch.Generator(device=device).manual_seed(int(state) & (2**63 - 1))
