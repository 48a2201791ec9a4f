"""Fused single-pass kernels for the hyperbolic step: C/OpenMP on CPU (cpu_kernel.py), Triton on CUDA
(triton_kernel.py). Both read x and g (and the remembered signs) once, write x once, compute in fp32 and take lr as
a runtime value (float, or 0-d tensor). Each steps a whole (device, dtype) list in one call: the C kernel in one
OpenMP region, the Triton kernel in one launch (its small tensor table is cached on the device; nothing else is
allocated).

``fused_hyperbolic_step_`` applies the step to every tensor it has a kernel for and returns the
(params, grads, signs) it did not handle (the caller runs the foreach path on those), or None if it handled all.
Both kernels work on flat storage: a parameter is handled when it, its grad (and its sign tensor) are each
non-overlapping and dense (contiguous, channels_last, or any permutation of dims) with the same layout, so the
i-th element in memory is the same element of all of them. Not handled: other strided views, tensors whose
operands differ in layout, dtypes other than fp32/bf16/fp16, grads of another dtype/shape than their parameter,
sign tensors other than int8/fp32, an lr tensor on another device than the parameters, leaves that require grad
while grad mode is on (foreach raises the usual autograd error for those), and everything when the kernel cannot
be built here. ``HAM_CPU_FUSED=never`` turns the CPU kernel off (debugging aid).
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
SIGN_DTYPES = (torch.int8, torch.float32)


def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def dense_layout(t: Tensor) -> tuple[int, ...] | None:
    """The strides of t's dims of size > 1 if t's elements exactly fill numel consecutive slots of memory
    (contiguous, channels_last, any dim permutation: "non-overlapping and dense"), else None. Two tensors of one
    shape with equal dense layouts hold the same element at each memory position, so a kernel may step them as
    flat storage. Size-1 dims are ignored (their stride is arbitrary: [C, K, 1, 1] convs in channels_last)."""
    dims = sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1)
    expected = 1
    for st, sz in dims:
        if st != expected:
            return None
        expected *= sz
    return tuple(st for sz, st in zip(t.shape, t.stride()) if sz != 1)


def _same_dense_layout(a: Tensor, b: Tensor) -> bool:
    if a.is_contiguous() and b.is_contiguous():  # fast path: the common case costs two flag reads
        return True
    la = dense_layout(a)
    return la is not None and la == dense_layout(b)


def _eligible(p: Tensor, g: Tensor, s: Tensor | None, grad_mode: bool, device: torch.device) -> bool:
    # Kernels index raw memory as flat storage: shapes, devices and layouts must match exactly. (device is
    # p.device, read once by the caller: each read builds a new torch.device object.)
    dtype = p.dtype
    return (dtype in FUSED_DTYPES and g.dtype == dtype and g.shape == p.shape and g.device == device
            and not (grad_mode and p.requires_grad) and _same_dense_layout(p, g)
            and (s is None or (s.dtype in SIGN_DTYPES and s.shape == p.shape and s.device == device
                               and _same_dense_layout(p, s))))


def _lr_ok(lr, device: torch.device) -> bool:
    """A tensor lr is read on the host for CPU tensors (no device involved) and by pointer on CUDA."""
    if not isinstance(lr, Tensor):
        return True
    return lr.numel() == 1 and (lr.device.type == "cpu" or lr.device == device)


def _bump_versions(tensors) -> None:
    # The kernels write through raw pointers; tell autograd, as a torch in-place op would.
    try:
        torch.autograd.graph.increment_version(tensors)
    except TypeError:  # older torch: one tensor at a time
        for t in tensors:
            torch.autograd.graph.increment_version(t)


def fused_hyperbolic_step_(params, grads, *, lr, alpha, beta, clamp, signs, beta_where_grad):
    c = math.inf if clamp is None else float(clamp)
    grad_mode = torch.is_grad_enabled()
    lr_is_number = not isinstance(lr, Tensor)
    groups: dict[tuple, list[int]] = {}
    rest: list[int] = []
    # per-tensor Python work is most of a small model's step: each attribute is read once (issue 21)
    for i, (p, g) in enumerate(zip(params, grads)):
        s = signs[i] if signs is not None else None
        device = p.device
        if _eligible(p, g, s, grad_mode, device) and (lr_is_number or _lr_ok(lr, device)):
            key = (device, p.dtype, None if s is None else s.dtype)
            group = groups.get(key)
            if group is None:
                groups[key] = [i]
            else:
                group.append(i)
        else:
            rest.append(i)

    for (device, dtype, sign_dtype), idx in groups.items():
        ps, gs = [params[i] for i in idx], [grads[i] for i in idx]
        ss = [signs[i] for i in idx] if signs is not None else None
        if device.type == "cuda" and _triton_ok():
            from ham.optim.kernels.triton_kernel import triton_hyperbolic_list_

            triton_hyperbolic_list_(ps, gs, ss, lr=lr, alpha=alpha, beta=beta, clamp=c,
                                    beta_where_grad=beta_where_grad)
        elif device.type == "cpu" and os.environ.get("HAM_CPU_FUSED", "auto") != "never":
            from ham.optim.kernels import cpu_kernel

            if not cpu_kernel.cpu_hyperbolic_(ps, gs, ss, lr=float(lr), alpha=alpha, beta=beta, clamp=c,
                                              beta_where_grad=beta_where_grad):
                rest.extend(idx)
                continue
        else:
            rest.extend(idx)
            continue
        _bump_versions(ps)

    if not rest:
        return None
    rest.sort()
    return ([params[i] for i in rest], [grads[i] for i in rest],
            [signs[i] for i in rest] if signs is not None else None)
