"""Shared sparsity helpers: which layers are prunable, exact top-k masks, applying masks to weights, grads and
optimizer state, DDP agreement, effective weights and sparsity accounting.

Accounting follows the reference implementations: conv and linear weights only (biases, norms never pruned).
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize

PRUNABLE_TYPES = (nn.Conv2d, nn.Conv1d, nn.Linear)


def prunable_layers(model: nn.Module, *, keep_first_dense: bool = False, keep_last_dense: bool = False
                    ) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, PRUNABLE_TYPES)]
    if keep_first_dense and layers:
        layers = layers[1:]
    if keep_last_dense and layers:
        layers = layers[:-1]
    return layers


def weight_of(module: nn.Module) -> Tensor:
    """The trainable weight tensor (the original one under a parametrization)."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations.weight.original
    return module.weight


# ------------------------------------------------------------------ exact top-k
def topk_mask(scores: Tensor, k: int) -> Tensor:
    """Bool mask with exactly k True entries at the largest scores; ties at the threshold go to the lowest flat
    indices, so every rank and every rerun picks the same entries. O(n) selection (kthvalue), no full sort."""
    flat = scores.flatten()
    n = flat.numel()
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.ones_like(scores, dtype=torch.bool)
    thr = torch.kthvalue(flat.float().cpu() if flat.device.type == "mps" else flat.float(), n - k + 1).values
    above = flat > thr
    missing = k - int(above.sum())
    ties = torch.nonzero(flat == thr).flatten()[:missing]
    mask = above.clone()
    mask[ties] = True
    return mask.view_as(scores)


def global_magnitude_masks(weights: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """One global magnitude threshold over all layers, hit exactly: keep round((1-s) * N) weights."""
    names = list(weights)
    sizes = [weights[n].numel() for n in names]
    n_keep = int(round((1.0 - sparsity) * sum(sizes)))
    flat = torch.cat([weights[n].detach().abs().flatten().float() for n in names])
    keep = topk_mask(flat, n_keep)
    out, start = {}, 0
    for n, size in zip(names, sizes):
        out[n] = keep[start:start + size].view_as(weights[n])
        start += size
    return out


def layer_magnitude_masks(weights: dict[str, Tensor], densities: dict[str, float]) -> dict[str, Tensor]:
    return {n: topk_mask(w.detach().abs(), int(round(densities[n] * w.numel()))) for n, w in weights.items()}


# ------------------------------------------------------------------ applying masks
@torch.no_grad()
def apply_masks_(masks: dict[str, Tensor], tensors: dict[str, Tensor]) -> None:
    for n, m in masks.items():
        tensors[n].mul_(m)


@torch.no_grad()
def mask_grads_(masks: dict[str, Tensor], tensors: dict[str, Tensor]) -> None:
    for n, m in masks.items():
        g = tensors[n].grad
        if g is not None:
            g.mul_(m)


@torch.no_grad()
def mask_optimizer_state_(optimizer: torch.optim.Optimizer | None, param: Tensor, mask: Tensor) -> None:
    """Zero every state tensor of `param` shaped like it (momentum_buffer, exp_avg, exp_avg_sq, ...)."""
    if optimizer is None:
        return
    for v in optimizer.state.get(param, {}).values():
        if isinstance(v, Tensor) and v.shape == param.shape:
            v.mul_(mask)


@torch.no_grad()
def reset_optimizer_state_(optimizer: torch.optim.Optimizer | None, params: Iterable[Tensor]) -> None:
    """Zero the shaped state of these params (e.g. momentum buffers after an Ac/Dc decompression)."""
    if optimizer is None:
        return
    for p in params:
        for v in optimizer.state.get(p, {}).values():
            if isinstance(v, Tensor) and v.shape == p.shape:
                v.zero_()


def broadcast_masks_(masks: dict[str, Tensor]) -> None:
    """Rank 0's masks everywhere (masks are computed from synced tensors already; this makes it certain)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    for n in sorted(masks):
        t = masks[n].to(torch.uint8)
        dist.broadcast(t, src=0)
        masks[n].copy_(t.bool())


# ------------------------------------------------------------------ effective weights
def effective_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Plain state_dict of the effective weights: parametrizations folded, keys as without them, on CPU."""
    if not any(parametrize.is_parametrized(m) for m in model.modules()):
        return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}
    clone = copy.deepcopy(model)
    for m in clone.modules():
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return {k: v.detach().clone().cpu() for k, v in clone.state_dict().items()}


@torch.no_grad()
def sparsity_report(model_or_sd: nn.Module | dict[str, Tensor], layer_names: list[str] | None = None
                    ) -> dict[str, Any]:
    """{"global": fraction of zeros over prunable weights, "layers": {name: sparsity}} of EFFECTIVE weights."""
    if isinstance(model_or_sd, nn.Module):
        layers = prunable_layers(model_or_sd)
        weights = {n: m.weight for n, m in layers}  # m.weight is the effective (parametrized) weight
    else:
        names = layer_names or [k[: -len(".weight")] for k, v in model_or_sd.items()
                                if k.endswith(".weight") and v.ndim >= 2]
        weights = {n: model_or_sd[n + ".weight"] for n in names}
    zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    return {"global": sum(zeros.values()) / max(1, total),
            "layers": {n: zeros[n] / weights[n].numel() for n in weights}}
