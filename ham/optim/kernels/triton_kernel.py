"""Triton kernel for the hyperbolic step on CUDA: one read of x and g (and signs), one write of x, fp32 math.

Scalars are plain float arguments: Triton does not specialise on float values, so a changing lr neither
recompiles nor needs a host-to-device copy (which would synchronise).
Tested on CPU through Triton's interpreter (TRITON_INTERPRET=1, tests/test_kernels.py).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _hyperbolic_kernel(x_ptr, g_ptr, s_ptr, lr, alpha, beta, c, n, HAS_SIGNS: tl.constexpr, BETA_WHERE_GRAD: tl.constexpr,
                       BLOCK_SIZE: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK_SIZE + tl.arange(0, BLOCK_SIZE)
    m = offs < n
    x = tl.load(x_ptr + offs, mask=m, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=m, other=0.0).to(tl.float32)
    if HAS_SIGNS:
        src = tl.load(s_ptr + offs, mask=m, other=0).to(tl.float32)
    else:
        src = x
    sign = tl.where(src > 0, 1.0, tl.where(src < 0, -1.0, 0.0))
    b = beta
    if BETA_WHERE_GRAD:
        b = tl.where(g != 0, beta, 0.0)
    e = -lr * (alpha * sign * g + b)
    e = tl.minimum(tl.maximum(e, -c), c)
    out = x * tl.exp(e)
    tl.store(x_ptr + offs, out.to(x_ptr.dtype.element_ty), mask=m)


def triton_hyperbolic_(x: torch.Tensor, g: torch.Tensor, *, lr: float, alpha: float, beta: float, clamp: float,
                       signs: torch.Tensor | None, beta_where_grad: bool) -> None:
    """x, g (and signs) contiguous on one device; clamp = inf for no clamp."""
    n = x.numel()
    grid = (triton.cdiv(n, BLOCK),)
    _hyperbolic_kernel[grid](x, g, signs if signs is not None else x, float(lr), float(alpha), float(beta),
                             float(clamp), n, HAS_SIGNS=signs is not None,
                             BETA_WHERE_GRAD=beta_where_grad, BLOCK_SIZE=BLOCK)
