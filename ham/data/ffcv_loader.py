"""The ffcv backend (`dataset.loader=ffcv`): the ResumableLoader interface over data_dir/{train,val}.beton.

- Order: the torchvision path's own (ham.data.loader.ShardedBatches): a permutation seeded by (seed, epoch),
  padded and sharded like DistributedSampler. Each rank hands ffcv only its own indices, from batch k on when
  resuming mid-epoch: skipped batches are never read or decoded. Both backends therefore visit the same samples
  in the same order for a (seed, epoch, rank), and a run may even switch backend when it resumes.
- Augmentation (ham.data.ffcv_ops): the torchvision path's, done at decode time, with every sample's random draws
  seeded by (seed, epoch, sample index), so resumed and uninterrupted runs see the same crops and flips.
  ImageNet: RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) + flip for training, centre crop of crop_pct of the
  short side for validation (resized with OpenCV INTER_AREA instead of PIL bilinear). CIFAR-100: random
  translation by up to 4 px with zero fill (= RandomCrop(32, padding=4)) + flip. Digits: shift by up to
  dataset.options.shift px with the background ink level.
- uint8 goes to the device (ffcv's ToDevice on CUDA); conversion to float and normalisation happen there, in
  channels_last layout when the trainer uses it (conv nets on CUDA).
- ImageNet speed options (dataset.ffcv, off by default): progressive resizing, a larger evaluation resolution,
  test-time flip averaging (ham.train.evaluate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ham.data.datasets import DatasetInfo
from ham.data.loader import EpochPosition, ShardedBatches, mix_seed
from ham.errors import ConfigError

# ffcv-imagenet's ResNet50 ramp, 88 epochs: min_res 160 until epoch 65, max_res 192 from epoch 76
RAMP_FRACTIONS = (65 / 88, 76 / 88)


def progressive_resolution(epoch: int, *, start_res: int, end_res: int, start_epoch: int, end_epoch: int) -> int:
    """start_res up to start_epoch, end_res from end_epoch, linear in between, rounded to a multiple of 32."""
    if epoch <= start_epoch:
        return start_res
    if epoch >= end_epoch:
        return end_res
    res = start_res + (end_res - start_res) * (epoch - start_epoch) / (end_epoch - start_epoch)
    return int(round(res / 32)) * 32


def ramp_epochs(prog: Any, epochs: int) -> tuple[int, int]:
    start = prog["start_epoch"] if prog["start_epoch"] is not None else round(RAMP_FRACTIONS[0] * epochs)
    end = prog["end_epoch"] if prog["end_epoch"] is not None else round(RAMP_FRACTIONS[1] * epochs)
    return int(start), int(end)


class _GivenOrder:
    """ffcv TraversalOrder stand-in: whatever index array the loader set for the coming epoch."""

    def __init__(self):
        self.order = np.zeros(0, dtype=np.uint64)

    def sample_order(self, epoch: int):
        return self.order


class FFCVLoader(EpochPosition):
    """Iterates (float images on the device, normalised; int64 labels) for one rank over one .beton file.
    Same interface as ham.data.loader.ResumableLoader: set_epoch, set_start_batch, rank_indices, len."""

    def __init__(self, path: Path, *, n: int, batch_size: int, train: bool, seed: int, rank: int, world_size: int,
                 drop_last: bool, device: torch.device, decoder: str, img_size: int, num_workers: int,
                 os_cache: bool, batches_ahead: int, mean, std, scale: float = 255.0, gray: bool = False,
                 channels_last: bool = False, translate: int = 0, flip: bool = False, crop_pct: float = 0.875,
                 resolution=None):
        from ffcv.fields.basics import IntDecoder
        from ffcv.fields.rgb_image import CenterCropRGBImageDecoder
        from ffcv.loader import Loader, OrderOption
        from ffcv.pipeline.compiler import Compiler
        from ffcv.transforms import ToDevice, ToTensor

        from ham.data.ffcv_ops import NormalizeToFloat, SampleSeeds, SeededFixedSize, SeededRandomResizedCrop

        self.batches = ShardedBatches(n, batch_size, shuffle=train, seed=seed, rank=rank, world_size=world_size,
                                      drop_last=drop_last)
        self.seed, self.device, self.channels_last, self.gray = seed, device, channels_last, gray
        self.resolution = resolution  # epoch -> training resolution (progressive resizing), or None
        self.num_workers = max(1, num_workers)
        self.seeds = SampleSeeds(n)
        if decoder == "random_resized_crop":
            self.decoder = SeededRandomResizedCrop((img_size, img_size), self.seeds, flip=flip)
        elif decoder == "center_crop":
            self.decoder = CenterCropRGBImageDecoder((img_size, img_size), ratio=crop_pct)
        else:
            self.decoder = SeededFixedSize(self.seeds, translate=translate, flip=flip)
        self._res = img_size
        self.on_cuda = on_cuda = device.type == "cuda"
        # CUDA: uint8 crosses to the GPU, normalised there; CPU: normalised by the decoding threads, ahead of use
        to_device = [ToDevice(device, non_blocking=True)] if on_cuda else []
        cpu_norm = [] if on_cuda else [NormalizeToFloat(mean, std, scale=scale, gray=gray,
                                                        channels_last=channels_last)]
        self._mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self._scale = float(scale)
        threads = torch.get_num_threads()
        Compiler.set_num_threads(self.num_workers)  # also decides at compile time whether the code is parallel
        try:
            self.loader = Loader(str(path), batch_size=batch_size, num_workers=self.num_workers, os_cache=os_cache,
                                 order=OrderOption.SEQUENTIAL, drop_last=False, batches_ahead=batches_ahead,
                                 pipelines={"image": [self.decoder, *cpu_norm, ToTensor(), *to_device],
                                            "label": [IntDecoder(), ToTensor(), *to_device]})
        finally:
            torch.set_num_threads(threads)  # ffcv sets torch's thread count to its own worker count
        self._order = _GivenOrder()
        self.loader.traversal_order = self._order
        self._epoch, self._start, self._running = 0, 0, None

    # ---- position: EpochPosition (set_epoch, set_start_batch, rank_indices, len)
    def batch_indices(self, epoch: int, start: int = 0) -> np.ndarray:
        """The dataset indices the next pass reads, in order: batches start.. of this rank's share of `epoch`."""
        bs = self.batches.batch_size
        idx = self.rank_indices(epoch)[start * bs:len(self) * bs]
        return np.asarray(idx, dtype=np.uint64)

    def __iter__(self):
        from ffcv.pipeline.compiler import Compiler

        epoch, start = self._epoch, self._start
        self._start = 0  # the skip applies to this iteration only
        self.close()
        order = self.batch_indices(epoch, start)
        if len(order) == 0:
            return iter(())
        if self.resolution is not None:
            res = self.resolution(epoch)
            if res != self._res:  # a new output size: new buffers and code (a few times per run)
                self.decoder.output_size = (res, res)
                Compiler.set_num_threads(self.num_workers)
                self.loader.generate_code()
                self._res = res
        self.seeds.set(mix_seed(self.seed, epoch))
        self._order.order = order
        threads = torch.get_num_threads()
        try:
            self._running = iter(self.loader)
        finally:
            torch.set_num_threads(threads)
        return self._batches(self._running)

    def _batches(self, it):
        for images, labels in it:
            yield self._to_float(images), labels.view(-1).to(self.device, torch.int64, copy=True)

    def _to_float(self, images: torch.Tensor) -> torch.Tensor:
        """CUDA: uint8 [B, H, W, 3] on the device -> normalised float [B, C, H, W], a new tensor, channels_last
        when the trainer uses it. CPU: already normalised by the pipeline; a view of ffcv's buffer, valid until
        the batch after next is requested (ffcv's contract; the trainer uses each batch before asking again)."""
        if not self.on_cuda:
            return images.permute(0, 3, 1, 2) if self.channels_last else images
        x = images.permute(0, 3, 1, 2)
        if self.gray:
            x = x[:, :1]
        x = (x.float() / self._scale - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def close(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


def _workers(cfg, env) -> int:
    import os

    from numba import config as numba_config

    ffcv = cfg.dataset.ffcv
    n = ffcv.num_workers if ffcv.num_workers is not None else cfg.trainer.num_workers
    if n == "auto":  # decoding threads, not processes: every core this rank may use
        from ham.train.threads import cores_per_rank

        n = cores_per_rank(env.world_size)
    cap = numba_config.NUMBA_NUM_THREADS  # numba refuses more threads than it started with (default: all cores)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size if env.device.type == "cpu" else 1))
    if env.device.type == "cpu" and local > 1:
        cap = max(1, cap // local)  # CPU DDP ranks on one machine share its cores
    return max(1, min(int(n or 1), cap))


def build_ffcv_loaders(cfg, env, *, per_rank_batch: int, eval_batch: int, channels_last: bool):
    """(train loader, val loader, DatasetInfo) from cfg.data_dir's .beton files (checked by ham.data.catalog)."""
    from ham import registry
    from ham.data.catalog import read_ffcv_meta
    from ham.data.ffcv_formats import ffcv_datasets, ffcv_format
    from ham.data.ffcv_write import ffcv_missing_message

    missing = ffcv_missing_message()
    if missing:
        raise ConfigError(missing)
    ds, root = cfg.dataset, Path(cfg.data_dir or "")
    meta = read_ffcv_meta(ds.name, cfg.data_dir)
    common = dict(seed=cfg.seed, rank=env.rank, world_size=env.world_size, device=env.device,
                  num_workers=_workers(cfg, env), os_cache=bool(ds.ffcv.os_cache),
                  batches_ahead=int(ds.ffcv.batches_ahead), channels_last=channels_last)
    n_train, n_val = int(meta["train_size"]), int(meta["val_size"])
    fmt = ffcv_format(ds.name)
    if fmt is None:
        raise ConfigError(f"dataset.loader=ffcv is not available for dataset={ds.name}; allowed: "
                          f"{', '.join(ffcv_datasets())}")
    train_kw, val_kw, size = fmt.decoding(cfg, meta)
    channels = registry.fact("dataset", ds.name, "shape")[1]
    info = DatasetInfo(ds.name, int(meta["num_classes"]), channels, size, n_train, n_val)
    train = FFCVLoader(root / "train.beton", n=n_train, batch_size=per_rank_batch, train=True, drop_last=True,
                       **common, **train_kw)
    val = FFCVLoader(root / "val.beton", n=n_val, batch_size=eval_batch, train=False, drop_last=False,
                     **common, **val_kw)
    val.test_time_flip = bool(getattr(ds.ffcv, "test_time_flip", False))
    train.test_time_flip = False
    return train, val, info


