"""A resumable, DDP-sharded loader whose batches are a pure function of (seed, epoch, position).

- Order: a permutation seeded by (seed, epoch), padded and sharded across ranks like DistributedSampler.
- Position: `set_start_batch(k)` skips the first k batches of the epoch WITHOUT loading them.
- Augmentation: every sample's random transform runs under RNGs seeded by (seed, epoch, index), inside a forked
  RNG so the training RNG is untouched. A run resumed mid-epoch therefore sees the same images with the same
  augmentation as an uninterrupted run, for any num_workers.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ham.errors import ConfigError

LOADER_BACKENDS = ("torchvision", "ffcv")


def sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index) % (2**63 - 1)


class SeededSamples(Dataset):
    """Receives (index, epoch) keys; runs the wrapped dataset's transform under per-sample seeded RNGs."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key
        s = sample_seed(self.seed, epoch, index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            random.seed(s)
            np.random.seed(s % (2**32))
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ShardedBatches:
    """Batch sampler (lives in the main process, so set_epoch/set_start_batch work with persistent workers)."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, rank: int, world_size: int,
                 drop_last: bool):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.start_batch = 0, 0

    def rank_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.world_size)
        order += order[: per_rank * self.world_size - self.n]  # pad (repeat) so every rank has the same count
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        idx = self.rank_indices(self.epoch)
        for b in range(self.start_batch, len(self)):
            yield [(i, self.epoch) for i in idx[b * self.batch_size:(b + 1) * self.batch_size]]


class ResumableLoader:
    def __init__(self, dataset: Dataset, *, batch_size: int, train: bool, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, drop_last: bool | None = None,
                 pin_memory: bool = False):
        drop_last = train if drop_last is None else drop_last
        self.batches = ShardedBatches(len(dataset), batch_size, shuffle=train, seed=seed, rank=rank,
                                      world_size=world_size, drop_last=drop_last)
        self.loader = DataLoader(
            SeededSamples(dataset, seed), batch_sampler=self.batches, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=num_workers > 0,
            # a private generator: creating an iterator must not consume the global torch RNG (bit-exact resume)
            generator=torch.Generator().manual_seed(seed),
            prefetch_factor=4 if num_workers > 0 else None)

    def set_epoch(self, epoch: int) -> None:
        self.batches.epoch = epoch
        self.batches.start_batch = 0

    def set_start_batch(self, k: int) -> None:
        self.batches.start_batch = k

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.loader)


def build_loader(dataset: Dataset, *, batch_size: int, train: bool, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, drop_last: bool | None = None, pin_memory: bool = False,
                 backend: str = "torchvision") -> ResumableLoader:
    if backend not in LOADER_BACKENDS:
        raise ConfigError(f"dataset.loader={backend!r} is not known; allowed: {', '.join(LOADER_BACKENDS)}")
    if backend == "ffcv":
        # the seam for the FFCV backend (a later issue): same interface, .beton files instead of folders
        raise ConfigError("dataset.loader='ffcv' is not implemented yet; allowed now: torchvision")
    return ResumableLoader(dataset, batch_size=batch_size, train=train, seed=seed, rank=rank,
                           world_size=world_size, num_workers=num_workers, drop_last=drop_last,
                           pin_memory=pin_memory)
