"""One training step, on its own: the trainer's loop, the tests and the benchmarks all call this object.

    forward/backward (SAM: two passes; the first under DDP no_sync, BN stats frozen in the second)
    grad clipping (pruned weights' grads masked first, so the norm does not count them)
    sparse_update: sparsifier.before_step -> optimizer.step (base step, then the hyperbolic step) ->
                   sparsifier.after_step (ham/sparse/base.py states this order once)
    scheduler.step(); zero_grad
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ham.optim.sam import bn_stats_frozen, sam_of
from ham.sparse.base import Dense, Sparsifier, sparse_update


class TrainStep:
    """`step(images, targets, k)` runs optimizer step number k (0-based; the sparsifier's schedules count it) and
    returns the detached loss; `stepped` says whether the optimizer updated (False on a RigL mask-update step).

    `forward` is the module the loss is computed with (the DDP- or torch.compile-wrapped model; default
    `model`); `model` is the bare module (SAM's BN freezing, clipping). `mixup` maps (images, targets) to mixed
    images and soft targets (timm's Mixup)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                 sparsifier: Sparsifier | None = None, *, forward: nn.Module | None = None,
                 amp_dtype: torch.dtype | None = None, mixup: Callable | None = None, label_smoothing: float = 0.0,
                 grad_clip_norm: float | None = None, distributed: bool = False):
        self.model = model
        self.forward = model if forward is None else forward
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.sparsifier = Dense() if sparsifier is None else sparsifier
        self.sam = sam_of(optimizer)
        self.amp_dtype = amp_dtype
        self.device_type = next(model.parameters()).device.type
        self.mixup = mixup
        self.label_smoothing = label_smoothing
        self.grad_clip_norm = grad_clip_norm
        self.distributed = distributed
        self.stepped = True

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.amp_dtype)

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = self.forward(images)
            if targets.ndim == 2:  # mixup/cutmix soft targets
                return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            return F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor, step: int) -> torch.Tensor:
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        if self.sam is not None:
            # SAM: ascent step from this rank's own gradient (no all-reduce: DDP no_sync covers the forward),
            # then the real gradient at the perturbed point with BN running stats frozen.
            no_sync = self.forward.no_sync() if self.distributed else contextlib.nullcontext()
            with no_sync:
                self.loss(images, targets).backward()
            self.sparsifier.mask_gradients()  # pruned weights must not be perturbed either
            self.sam.first_step()
            self.optimizer.zero_grad(set_to_none=True)
            with bn_stats_frozen(self.model):
                loss = self.loss(images, targets)
                loss.backward()
        else:
            loss = self.loss(images, targets)
            loss.backward()
        if self.grad_clip_norm:
            self.sparsifier.mask_gradients()  # the clipping norm must not count pruned weights' gradients
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        # base (or SAM second) step, then the hyperbolic step; a skipped update (a RiGL mask update) undoes SAM's
        # ascent step
        self.stepped = sparse_update(self.sparsifier, self.optimizer, step,
                                     before_skip=self.sam.restore if self.sam is not None else None)
        if self.scheduler is not None:
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()
