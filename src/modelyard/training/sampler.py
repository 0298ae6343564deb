"""Batches drawn from a per-epoch seeded permutation, sharded across processes.

The order depends only on (seed, epoch), never on global RNG state, so a resumed run sees the same
batches, and a run on W processes sees the same global batches as a run on one.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    def __init__(self, n: int, batch_size: int, *, seed: int, shuffle: bool = True, rank: int = 0, world: int = 1):
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world = rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch

    def global_batches(self) -> list[torch.Tensor]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        batches = list(order.split(self.batch_size))
        if self.world > 1 and len(batches[-1]) < self.world:
            batches.pop()  # every process needs at least one example of each global batch
        return batches

    def __iter__(self):
        for batch in self.global_batches()[self.start:]:
            lo = self.rank * len(batch) // self.world
            hi = (self.rank + 1) * len(batch) // self.world
            yield batch[lo:hi].tolist()

    def __len__(self) -> int:
        full = math.ceil(self.n / self.batch_size)
        if self.world > 1 and self.n % self.batch_size and self.n % self.batch_size < self.world:
            full -= 1
        return full - self.start

    def global_size(self, i: int) -> int:
        """Examples in global batch i of this epoch (counting from the epoch's first batch)."""
        return min(self.batch_size, self.n - i * self.batch_size)
