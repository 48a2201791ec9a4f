"""Triton kernel for the hyperbolic step on CUDA: one read of x and g (and signs), one write of x, fp32 math,
one launch per tensor.

lr is either a plain float argument (Triton does not specialise on float values, so a new lr every step neither
recompiles nor copies anything to the device) or, for a 0-d CUDA tensor (capturable schedulers), read by the
kernel through its pointer: no .item(), no host-device synchronisation.
Tested on CPU through Triton's interpreter (TRITON_INTERPRET=1, tests/test_kernels.py); production code only
sends CUDA tensors here.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _hyperbolic_kernel(x_ptr, g_ptr, s_ptr, lr, lr_ptr, alpha, beta, c, n, HAS_SIGNS: tl.constexpr,
                       LR_FROM_PTR: tl.constexpr, BETA_WHERE_GRAD: tl.constexpr, BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64 offsets: tensors beyond 2^31 elements stay correct
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_SIGNS:
        src = tl.load(s_ptr + offs, mask=m, other=0).to(tl.float32)
    else:
        src = x
    if LR_FROM_PTR:
        lr_v = tl.load(lr_ptr).to(tl.float32)
    else:
        lr_v = lr
    sign = tl.where(src > 0, 1.0, tl.where(src < 0, -1.0, 0.0))
    b = beta
    if BETA_WHERE_GRAD:
        b = tl.where(g != 0, beta, 0.0)
    e = -lr_v * (alpha * sign * g + b)
    e = tl.minimum(tl.maximum(e, -c), c)
    out = x * tl.exp(e)
    tl.store(x_ptr + offs, out.to(x_ptr.dtype.element_ty), mask=m)


def triton_hyperbolic_(x: torch.Tensor, g: torch.Tensor, *, lr, alpha: float, beta: float, clamp: float,
                       signs: torch.Tensor | None, beta_where_grad: bool) -> None:
    """x, g (and signs) contiguous, same shape, on one device; clamp = inf for no bound; lr a float or a
    one-element tensor on x's device (or on the CPU, read once on the host)."""
    n = x.numel()
    if n == 0:
        return
    lr_ptr = None
    if isinstance(lr, torch.Tensor):
        if lr.device == x.device:
            lr_ptr = lr.reshape(1)
        else:  # a CPU tensor: reading it involves no device
            lr = float(lr)
    grid = (triton.cdiv(n, BLOCK),)
    _hyperbolic_kernel[grid](x, g, signs if signs is not None else x, 0.0 if lr_ptr is not None else float(lr),
                             lr_ptr if lr_ptr is not None else x, float(alpha), float(beta), float(clamp), n,
                             HAS_SIGNS=signs is not None, LR_FROM_PTR=lr_ptr is not None,
                             BETA_WHERE_GRAD=beta_where_grad, BLOCK_SIZE=BLOCK)


def triton_hyperbolic_list_(params, grads, signs, *, lr, alpha: float, beta: float, clamp: float,
                            beta_where_grad: bool) -> None:
    """All tensors on ONE CUDA device; launches on that device whatever the current one is."""
    if isinstance(lr, torch.Tensor) and lr.device.type == "cpu":
        lr = float(lr)  # once for the list, not per tensor
    with torch.cuda.device(params[0].device):
        for i, (p, g) in enumerate(zip(params, grads)):
            triton_hyperbolic_(p, g, lr=lr, alpha=alpha, beta=beta, clamp=clamp,
                               signs=signs[i] if signs is not None else None, beta_where_grad=beta_where_grad)


def compiled_variants() -> int | None:
    """How many specialisations of the kernel Triton has compiled in this process (None if this Triton's
    internals differ); the benchmark checks that a changing lr adds none."""
    try:
        return sum(len(cache[0]) for cache in _hyperbolic_kernel.device_caches.values())
    except Exception:  # noqa: BLE001
        return None
