"""Fused single-pass kernels for the hyperbolic step: Triton on CUDA, torch.compile'd C++ on CPU.

``fused_hyperbolic_step_`` applies the step to every tensor it has a kernel for and returns the
(params, grads, signs) it did not handle (the caller runs the foreach path on those), or None if it handled all.

CPU policy ("auto"/"fused"): the compiled kernel is used when the call covers at least ``CPU_MIN_NUMEL`` elements
(ResNet-sized models: it is ~2-4x faster than the foreach chain); small models stay on foreach, where the one-time
compile (~15 s cold, less with inductor's disk cache) would cost more than it saves. ``HAM_CPU_FUSED=always|never``
overrides the threshold.
"""

from __future__ import annotations

import math
import os

import torch

CPU_MIN_NUMEL = 1 << 20
FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _triton_ok() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


def _eligible(p: torch.Tensor, g: torch.Tensor, s: torch.Tensor | None) -> bool:
    return (p.dtype in FUSED_DTYPES and g.dtype == p.dtype and p.is_contiguous() and g.is_contiguous()
            and g.device == p.device and (s is None or (s.is_contiguous() and s.device == p.device)))


def _cpu_policy(total_numel: int) -> bool:
    mode = os.environ.get("HAM_CPU_FUSED", "auto")
    if mode == "never":
        return False
    return mode == "always" or total_numel >= CPU_MIN_NUMEL


def fused_hyperbolic_step_(params, grads, *, lr, alpha, beta, clamp, signs, beta_where_grad):
    c = math.inf if clamp is None else float(clamp)
    rest = ([], [], [] if signs is not None else None)
    cuda, cpu = [], []
    for i, (p, g) in enumerate(zip(params, grads)):
        s = signs[i] if signs is not None else None
        if not isinstance(lr, torch.Tensor) and _eligible(p, g, s):
            (cuda if p.is_cuda else cpu if p.device.type == "cpu" else rest[0]).append(i)
        else:
            rest[0].append(i)

    if cuda and _triton_ok():
        from ham.optim.kernels.triton_kernel import triton_hyperbolic_

        for i in cuda:
            triton_hyperbolic_(params[i], grads[i], lr=lr, alpha=alpha, beta=beta, clamp=c,
                               signs=signs[i] if signs is not None else None, beta_where_grad=beta_where_grad)
    else:
        rest[0].extend(cuda)

    if cpu and _cpu_policy(sum(params[i].numel() for i in cpu)):
        from ham.optim.kernels.cpu_compiled import cpu_hyperbolic_

        by_dtype: dict[torch.dtype, list[int]] = {}
        for i in cpu:
            by_dtype.setdefault(params[i].dtype, []).append(i)
        for idx in by_dtype.values():
            ok = cpu_hyperbolic_([params[i] for i in idx], [grads[i] for i in idx],
                                 [signs[i] for i in idx] if signs is not None else None, lr=lr, alpha=alpha,
                                 beta=beta, clamp=c, beta_where_grad=beta_where_grad)
            if not ok:
                rest[0].extend(idx)
    else:
        rest[0].extend(cpu)

    if not rest[0]:
        return None
    idx = sorted(rest[0])
    return ([params[i] for i in idx], [grads[i] for i in idx],
            [signs[i] for i in idx] if signs is not None else None)
