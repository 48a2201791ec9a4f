"""A resumable, DDP-sharded loader whose batches are a pure function of (seed, epoch, rank, batch position).

- Order: a permutation seeded by (seed, epoch), padded and sharded across ranks like DistributedSampler
  (rank r takes every world_size-th index, so ranks are disjoint and all have the same count).
- Position: `set_start_batch(k)` makes the next iteration skip the first k batches WITHOUT loading them.
- Augmentation: each batch is loaded under torch/python/numpy RNGs seeded by (seed, epoch, rank, batch index).
  In the main process (num_workers=0) those RNGs are restored afterwards, so the training RNG is untouched.
  A run resumed at batch k of epoch e therefore sees the same images with the same augmentation as an
  uninterrupted run, for any num_workers. Seeding per batch (not per sample) keeps the cost negligible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from ham.errors import ConfigError

LOADER_BACKENDS = ("torchvision", "ffcv")
_MASK64 = (1 << 64) - 1


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from a tuple of integers (splitmix64 finaliser per part). Unlike a linear combination,
    nearby tuples such as (epoch + 1, b) and (epoch, b + c) give unrelated seeds."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & _MASK64)) + 0x9E3779B97F4A7C15 & _MASK64
        h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        h = (h ^ (h >> 27)) * 0x94D049BB133111EB & _MASK64
        h ^= h >> 31
    return h >> 1


@dataclass(frozen=True)
class BatchRequest:
    """What the batch sampler hands to the dataset: the indices of one batch and the seed to load it under."""
    indices: tuple[int, ...]
    seed: int


class SeededBatches(Dataset):
    """Loads a whole BatchRequest (via `__getitems__`) with every RNG an augmentation might use seeded."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):  # plain access, outside the loader: unseeded
        return self.dataset[index]

    def __getitems__(self, request: BatchRequest) -> list:
        restore = get_worker_info() is None  # in a worker process the global RNGs are ours to clobber
        if restore:
            saved = torch.get_rng_state(), random.getstate(), np.random.get_state()
        # default_generator, not torch.manual_seed: the latter would also reseed every CUDA generator
        torch.default_generator.manual_seed(request.seed)
        random.seed(request.seed)
        np.random.seed(request.seed % (2**32))
        try:
            return [self.dataset[i] for i in request.indices]
        finally:
            if restore:
                torch.set_rng_state(saved[0])
                random.setstate(saved[1])
                np.random.set_state(saved[2])


class ShardedBatches:
    """Batch sampler. It lives in the main process, so the position set between epochs reaches persistent
    workers. `plan(epoch, start)` fixes what the next `iter()` yields (DataLoader may call iter() twice)."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, rank: int, world_size: int,
                 drop_last: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self.start_batch = 0, 0

    def plan(self, epoch: int, start_batch: int) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def rank_indices(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = -(-self.n // self.world_size)
        pad = per_rank * self.world_size - self.n
        order += (order * (pad // max(self.n, 1) + 1))[:pad]  # repeat the head so every rank has the same count
        return order[self.rank::self.world_size]

    def __len__(self) -> int:
        per_rank = -(-self.n // self.world_size)
        return per_rank // self.batch_size if self.drop_last else -(-per_rank // self.batch_size)

    def __iter__(self):
        # computed eagerly so that a later plan() cannot change an iterator already handed out
        idx, bs, epoch = self.rank_indices(self.epoch), self.batch_size, self.epoch
        requests = [BatchRequest(tuple(idx[b * bs:(b + 1) * bs]), mix_seed(self.seed, epoch, self.rank, b))
                    for b in range(self.start_batch, len(self))]
        return iter(requests)


class EpochPosition:
    """The position interface every loader backend shares, over its ShardedBatches `self.batches`: set_epoch(e)
    (and set_start_batch(k) when resuming mid-epoch) before each pass; len() is the number of batches of a full
    epoch on this rank."""

    batches: ShardedBatches
    test_time_flip: bool = False  # evaluation averages each image's logits with its mirror image's (ffcv ImageNet)
    _epoch: int = 0
    _start: int = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        self._epoch, self._start = int(epoch), 0

    def set_start_batch(self, k: int) -> None:
        if not 0 <= k <= len(self):
            raise ValueError(f"start batch {k} is outside 0..{len(self)}")
        self._start = int(k)

    def rank_indices(self, epoch: int) -> list[int]:
        """The dataset indices this rank visits in `epoch`, in order (before batching)."""
        return self.batches.rank_indices(epoch)

    def __len__(self) -> int:
        return len(self.batches)


def ignore_interrupts(_worker_id: int) -> None:
    """A loader worker ignores Ctrl-C (the terminal sends SIGINT to the whole process group): the main process
    finishes its step, checkpoints and shuts the workers down (ham/lifecycle/stop.py); a worker that died of it
    would fail the next batch instead."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ResumableLoader(EpochPosition):
    """Iterates (images, labels) for one rank (torch DataLoader workers); position as EpochPosition."""

    def __init__(self, dataset: Dataset, *, batch_size: int, train: bool, seed: int, rank: int = 0,
                 world_size: int = 1, num_workers: int = 0, drop_last: bool | None = None,
                 pin_memory: bool = False):
        drop_last = train if drop_last is None else drop_last
        self.batches = ShardedBatches(len(dataset), batch_size, shuffle=train, seed=seed, rank=rank,
                                      world_size=world_size, drop_last=drop_last)
        self._epoch, self._start = 0, 0
        self.loader = DataLoader(
            SeededBatches(dataset), batch_sampler=self.batches, num_workers=num_workers, pin_memory=pin_memory,
            persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None,
            worker_init_fn=ignore_interrupts if num_workers > 0 else None,
            # a private generator: creating an iterator must not consume the global torch RNG (bit-exact
            # resume). It only sets the workers' base seeds; batches are seeded by (seed, epoch, rank, batch).
            generator=torch.Generator().manual_seed(mix_seed(seed, rank)))

    def __iter__(self):
        self.batches.plan(self._epoch, self._start)
        self._start = 0  # the skip applies to this iteration only
        return iter(self.loader)


def build_loader(dataset: Dataset, *, batch_size: int, train: bool, seed: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, drop_last: bool | None = None, pin_memory: bool = False,
                 backend: str = "torchvision") -> ResumableLoader:
    """train=True shuffles (by seed and epoch) and drops the last partial batch unless drop_last says otherwise."""
    if backend not in LOADER_BACKENDS:
        raise ConfigError(f"dataset.loader={backend!r} is not known; allowed: {', '.join(LOADER_BACKENDS)}")
    if backend == "ffcv":
        # the ffcv backend reads data_dir's .beton files, not a Dataset: ham.data.ffcv_loader.build_ffcv_loaders
        raise ConfigError("dataset.loader='ffcv' reads .beton files, not a Dataset: use "
                          "ham.data.ffcv_loader.build_ffcv_loaders (the trainer does); here: backend='torchvision'")
    return ResumableLoader(dataset, batch_size=batch_size, train=train, seed=seed, rank=rank,
                           world_size=world_size, num_workers=num_workers, drop_last=drop_last,
                           pin_memory=pin_memory)
