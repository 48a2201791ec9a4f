"""Fused single-pass kernels for the hyperbolic step.

``fused_hyperbolic_step_`` applies the step to every tensor it has a kernel for and returns the
(params, grads, signs) it could not handle, or None when it handled everything. This placeholder handles
nothing; the CPU/Triton kernels plug in here.
"""

from __future__ import annotations


def fused_hyperbolic_step_(params, grads, *, lr, alpha, beta, clamp, signs, beta_where_grad):
    return list(params), list(grads), (None if signs is None else list(signs))
