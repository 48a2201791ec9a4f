"""Thm 4.2: for small lr, HAM's iterates (GD step, then the hyperbolic step) follow the gradient flow

    dx/dt = -grad f(x) - |x| * (alpha * grad f(x) + sign(x) * beta),

i.e. x_k stays within O(lr) of x(t = k * lr). We compare the two on a small least-squares problem
f(x) = 1/2 ||A x - b||^2 whose coordinates stay away from zero on [0, T] (the flow's sign(x) is discontinuous at 0,
and away from it the deployed HYP* and the "signed" variant coincide to first order). The reference flow is RK4
with a step far below every lr tested (its error ~dt^4 is negligible next to the O(lr) gap); the discrete iterates
use the library's ham.optim.functional.hyperbolic_step_ with no clamp.
"""

from __future__ import annotations

import torch

from ham.optim.functional import hyperbolic_step_


def small_problem(seed: int = 0, d: int = 6, n: int = 4):
    """(A, b, x0): f(x) = 1/2 ||A x - b||^2, x0 away from zero, a minimiser with the same signs as x0."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, n, generator=g, dtype=torch.float64) / d ** 0.5
    x_target = torch.tensor([1.5, -2.0, 0.8, -1.2], dtype=torch.float64)[:n]
    x0 = torch.tensor([1.0, -1.0, 1.2, -0.6], dtype=torch.float64)[:n]
    return A, A @ x_target, x0


def grad(A, b, x):
    return A.T @ (A @ x - b)


def flow_rhs(A, b, x, alpha: float, beta: float):
    gr = grad(A, b, x)
    return -gr - x.abs() * (alpha * gr + torch.sign(x) * beta)


def _n_steps(t: float, h: float) -> int:
    k = round(t / h)
    if abs(k * h - t) > 1e-9 * max(t, 1.0):
        raise ValueError(f"time {t} is not a multiple of the step {h}; use lr = T / integer (e.g. powers of 2)")
    return k


def integrate_flow(A, b, x0, *, alpha: float, beta: float, times: list[float], dt: float = 2.0**-13
                   ) -> list[torch.Tensor]:
    """Classic fixed-step RK4; returns x(t) for each t in ``times`` (each a multiple of dt)."""
    x, t_steps, out = x0.clone(), 0, []
    for t in times:
        for _ in range(_n_steps(t, dt) - t_steps):
            k1 = flow_rhs(A, b, x, alpha, beta)
            k2 = flow_rhs(A, b, x + 0.5 * dt * k1, alpha, beta)
            k3 = flow_rhs(A, b, x + 0.5 * dt * k2, alpha, beta)
            k4 = flow_rhs(A, b, x + dt * k3, alpha, beta)
            x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        t_steps = _n_steps(t, dt)
        out.append(x.clone())
    return out


def ham_iterates(A, b, x0, *, alpha: float, beta: float, lr: float, times: list[float],
                 signed: bool = False) -> list[torch.Tensor]:
    """GD step then the library's hyperbolic step; returns x_k at k = t / lr for each t in ``times``."""
    x, k, out = x0.clone(), 0, []
    for t in times:
        for _ in range(_n_steps(t, lr) - k):
            g = grad(A, b, x)
            before = torch.sign(x)
            x = x - lr * g
            hyperbolic_step_([x], [g], lr=lr, alpha=alpha, beta=beta, clamp=None,
                             signs=[before] if signed else None, backend="reference")
        k = _n_steps(t, lr)
        out.append(x.clone())
    return out


def flow_gap(lrs: list[float], *, alpha: float = 2.0, beta: float = 0.1, T: float = 1.0, checks: int = 4,
             signed: bool = False, seed: int = 0, dt: float = 2.0**-13) -> list[tuple[float, float]]:
    """[(lr, max over t in {T/checks, ..., T} of ||x_{t/lr} - x(t)||)] for each lr (lr must divide T/checks)."""
    A, b, x0 = small_problem(seed)
    times = [T * (i + 1) / checks for i in range(checks)]
    for lr in lrs:  # fail before the (slower) reference integration
        _n_steps(times[0], lr)
    ref = integrate_flow(A, b, x0, alpha=alpha, beta=beta, times=times, dt=dt)
    gaps = []
    for lr in lrs:
        xs = ham_iterates(A, b, x0, alpha=alpha, beta=beta, lr=lr, times=times, signed=signed)
        gaps.append((lr, max(float(torch.linalg.vector_norm(a - r)) for a, r in zip(xs, ref))))
    return gaps
