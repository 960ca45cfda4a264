"""Which test points a certify shard takes, and the noise each one draws.

Points are every `skip`-th test index (at most `max`), cut into K contiguous blocks. Point `idx`
draws its noise from seeds derived from (seed, idx) alone, in blocks of BLOCK draws that each
have a seed of their own (`Draws`): how the draws are cut into forward batches (the batch size),
which shard holds the point, a restart, or the points it shares batches with change no draw.
So the merged output of K shards equals a single run, whatever each job's batch size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from l1cert.utils import L1CertError

if TYPE_CHECKING:
    import torch

    from l1cert.noise import Noise

# Draws per block. A multiple of it is every round of sequential sampling (100 · 2^k) and the
# usual n0 and n, so those rounds never draw a block twice.
BLOCK = 100
SELECTION, ESTIMATION = 0, 1  # the two streams of a point: they never share a draw
_MASK64 = 2**64 - 1


def parse_shard(text: str) -> tuple[int, int]:
    """'k/K' (1-based) -> (k, K)."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(p.isascii() and p.isdigit() and len(p) <= 9 for p in parts):
        raise L1CertError(f"--shard must look like k/K (e.g. 2/4), got {text!r}")
    k, total = (int(part) for part in parts)
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
    """The test indices of a shard: `settings` holds dataset_size, skip, max, shard, shards."""
    indices = select_indices(settings["dataset_size"], settings["skip"], settings["max"])
    return shard_block(indices, settings["shard"], settings["shards"])


def point_seed(seed: int, idx: int) -> int:
    """The 64-bit seed of test point idx's noise: the same on every shard and restart."""
    return int(np.random.SeedSequence([seed, idx]).generate_state(1, np.uint64)[0])


def _mix(z: int) -> int:
    """SplitMix64's finalizer: a 64-bit integer hashed into another, cheaply in Python."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class Draws:
    """The noisy copies one point draws, the same whatever cuts them into batches.

    A point has two streams of draws, selection and estimation; block j of a stream (its draws
    j·BLOCK … (j + 1)·BLOCK − 1) comes from a generator seeded by (the point's seed, stream, j),
    so any range of draws can be made on its own. A range that covers part of a block draws the
    whole block and keeps its part. CPU and CUDA generators give other numbers for one seed:
    the device decides the draws, the batch size does not.
    """

    def __init__(self, seed: int, device: torch.device):
        import torch

        self.seed = int(seed) & _MASK64
        self.generator = torch.Generator(device=device)
        self._spare: tuple[torch.Tensor, torch.Tensor] | None = None
        self._spare_block: tuple[int, int] | None = None  # which block the spare holds

    def block_seed(self, stream: int, block: int) -> int:
        return _mix(self.seed ^ _mix((stream << 40) + block)) & (2**63 - 1)

    def perturb_(self, noise: Noise, out, x, stream: int, start: int, scratch=None):
        """Fill `out` with x under draws start … start + len(out) − 1 of `stream` (x broadcast
        over the rows; `scratch`, a tensor like `out`, spares the noise an allocation)."""
        end = start + len(out)
        at = start
        while at < end:
            block = at // BLOCK
            first, last = block * BLOCK, min((block + 1) * BLOCK, end)
            self.generator.manual_seed(self.block_seed(stream, block))
            rows = slice(at - start, last - start)
            if at == first and last == first + BLOCK:  # a whole block, drawn in place
                noise.perturb_(out[rows], x, self.generator, _part(scratch, rows))
            else:  # the whole block into a spare, once: the next range may take the rest
                whole, spare = self._spares(out)
                if self._spare_block != (stream, block):
                    noise.perturb_(whole, x, self.generator, spare)
                    self._spare_block = (stream, block)
                out[rows].copy_(whole[at - first : last - first])
            at = last
        return out

    def _spares(self, like):
        """A block-sized buffer (and its scratch) in `like`'s layout, made once."""
        import torch

        spare = self._spare
        shape = (BLOCK, *like.shape[1:])
        if spare is None or spare[0].shape != shape or spare[0].dtype != like.dtype:
            channels_last = like.dim() == 4 and like.is_contiguous(
                memory_format=torch.channels_last
            )
            layout = torch.channels_last if channels_last else torch.contiguous_format
            whole = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)
            spare = self._spare = (whole, torch.empty_like(whole))
            self._spare_block = None
        return spare


def _part(tensor, rows: slice):
    return None if tensor is None else tensor[rows]
