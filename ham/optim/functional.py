"""Functional core of the hyperbolic step (HYP*), torch.optim style: one function over lists of tensors.

    x <- x * exp(clamp(-lr * (alpha * sign(s) * g + beta), -c, c))

where s is x itself (the deployed HYP* step, sign taken AFTER the base optimizer step) or the sign remembered
before the base step (the "signed" ablation). Everything is elementwise, so exact zeros stay zero and the sign of
a weight never changes. No host-device synchronisation happens here: lr may be a Python float or a 0-d tensor.

Backends (all compute the same formula; see ham/optim/kernels for the fused ones):
  "foreach"  chain of torch._foreach ops over bounded chunks (portable reference, never compiles)
  "fused"    one fused pass (Triton on CUDA; on CPU a C/OpenMP kernel over the whole list, built on first use
             and loaded through ctypes); falls back to "foreach" when the kernel cannot be built here
  "auto"     "fused" where available, else "foreach"; "foreach" while torch.compile traces the step
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

BACKENDS = ("auto", "foreach", "fused", "reference")

# Bound on the temporary buffer of the foreach path (elements, per chunk): peak extra memory stays
# at ~16 MiB in fp32 instead of a full copy of the model.
_FOREACH_CHUNK_NUMEL = 1 << 22


def _compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def validate_hparams(alpha: float, beta: float, clamp: float | None) -> None:
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"HAM {name} must be a finite number, got {value!r}")
    if clamp is not None and (
        isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0
    ):
        raise ValueError(f"HAM clamp must be a positive number or None, got {clamp!r}")


def hyperbolic_step_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    beta: float,
    clamp: float | None = 5.0,
    signs: Sequence[Tensor] | None = None,
    beta_where_grad: bool = False,
    backend: str = "auto",
) -> None:
    """Apply the hyperbolic step in place to ``params``.

    Args:
        params, grads: same-length lists; grads[i] is the gradient the base step used for params[i].
        lr: the current (scheduled) learning rate of the group, float or 0-d tensor.
        alpha: hyperbolic strength (alpha < 0, "nHAM", is legal).
        beta: multiplicative weight decay.
        clamp: bound c on the exponent, or None for no bound.
        signs: optional list of sign tensors (any dtype) remembered before the base step ("signed" variant).
        beta_where_grad: apply beta only where grad != 0 (paper appendix D.4, for nets with dropout).
        backend: one of BACKENDS.
    """
    if len(params) != len(grads) or (signs is not None and len(signs) != len(params)):
        raise ValueError("params, grads (and signs) must have the same length")
    if not params or (alpha == 0 and beta == 0):
        return
    if backend not in BACKENDS:
        raise ValueError(f"unknown HAM backend {backend!r}; allowed: {', '.join(BACKENDS)}")
    if backend == "auto" and _compiling():
        # Under torch.compile the foreach chain is traced (and fused by inductor) like torch's own optimizers;
        # the ctypes/Triton launch of the fused kernels would be a graph break per call.
        backend = "foreach"
    if backend == "reference":
        return _reference(params, grads, lr, alpha, beta, clamp, signs, beta_where_grad)
    if backend in ("auto", "fused"):
        from ham.optim import kernels

        rest = kernels.fused_hyperbolic_step_(
            params, grads, lr=lr, alpha=alpha, beta=beta, clamp=clamp, signs=signs,
            beta_where_grad=beta_where_grad,
        )
        if not rest:
            return
        # tensors the fused kernels do not handle (device/dtype) go through the foreach path
        params, grads, signs = rest
    _foreach(params, grads, lr, alpha, beta, clamp, signs, beta_where_grad)


def _reference(params, grads, lr, alpha, beta, clamp, signs, beta_where_grad) -> None:
    """Straightforward per-tensor formula; the definition every backend is tested against."""
    for i, (p, g) in enumerate(zip(params, grads)):
        s = torch.sign(p if signs is None else signs[i].to(p.dtype))
        b = beta * (g != 0).to(p.dtype) if beta_where_grad else beta
        expo = -lr * (alpha * s * g + b)
        if clamp is not None:
            expo = expo.clamp(-clamp, clamp)
        p.mul_(torch.exp(expo))


def _chunks(n_items: int, numels: Sequence[int], limit: int):
    start, acc = 0, 0
    for i in range(n_items):
        acc += numels[i]
        if acc >= limit:
            yield start, i + 1
            start, acc = i + 1, 0
    if start < n_items:
        yield start, n_items


def _foreach(params, grads, lr, alpha, beta, clamp, signs, beta_where_grad) -> None:
    # Group by (device, dtype): foreach kernels need homogeneous lists.
    buckets: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    for idx in buckets.values():
        numels = [params[i].numel() for i in idx]
        for a, b in _chunks(len(idx), numels, _FOREACH_CHUNK_NUMEL):
            sel = idx[a:b]
            ps = [params[i] for i in sel]
            gs = [grads[i] for i in sel]
            src = ps if signs is None else [signs[i].to(params[i].dtype) for i in sel]
            t = torch._foreach_sign(src)
            torch._foreach_mul_(t, gs)
            if isinstance(lr, Tensor):
                torch._foreach_mul_(t, lr.to(ps[0].device) * (-alpha))
            else:
                torch._foreach_mul_(t, -lr * alpha)
            if beta != 0:
                if beta_where_grad:
                    mask = [g.ne(0).to(g.dtype) for g in gs]
                    torch._foreach_mul_(mask, -lr * beta if not isinstance(lr, Tensor) else lr * (-beta))
                    torch._foreach_add_(t, mask)
                elif isinstance(lr, Tensor):
                    torch._foreach_add_(t, [(-beta * lr).to(ps[0].device)] * len(t))
                else:
                    torch._foreach_add_(t, -lr * beta)
            if clamp is not None:
                torch._foreach_clamp_min_(t, -clamp)
                torch._foreach_clamp_max_(t, clamp)
            torch._foreach_exp_(t)
            torch._foreach_mul_(ps, t)
