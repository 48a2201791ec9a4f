"""Validation pass: top-1/top-5 and loss, summed over DDP ranks."""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, loader, device: torch.device, *, autocast: Callable, channels_last: bool = False,
             flip: bool = False) -> dict[str, float]:
    """flip: average the logits of each image and its mirror image (test-time flip, ffcv-imagenet's lr_tta)."""
    # sums as one tensor: [loss, correct@1, correct@5, count]; one all-reduce and one host sync at the end
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    loader.set_epoch(0)
    loader.set_start_batch(0)
    for images, targets in loader:
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast():
            logits = model(images).float()
            if flip:
                logits = (logits + model(images.flip(3)).float()) / 2
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        hit = top.eq(targets[:, None])
        # the count as a fill on the device: torch.tensor(n, device=cuda) would be a pageable copy (a host sync)
        count = torch.full((), float(targets.numel()), device=device)
        totals += torch.stack([F.cross_entropy(logits, targets, reduction="sum"), hit[:, :1].sum(),
                               hit.sum(), count]).double()
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(totals)
    loss, c1, c5, n = totals.tolist()
    n = max(n, 1.0)
    return {"val/loss": loss / n, "val/top1": 100.0 * c1 / n, "val/top5": 100.0 * c5 / n}
