"""Thm 4.2: for small lr, HAM's iterates (GD step, then HYP*) follow the gradient flow

    dx/dt = -grad f(x) - |x| * (alpha * grad f(x) + sign(x) * beta).

We compare the discrete iterates at t = k * lr with an RK4 integration of the flow on a small least-squares
problem whose coordinates stay away from zero (the flow's sign(x) is discontinuous there). The gap is O(lr).
"""

from __future__ import annotations

import torch

from ham.optim.functional import hyperbolic_step_


def small_problem(seed: int = 0, d: int = 6, n: int = 4):
    """f(x) = 1/2 ||A x - b||^2 with x0 well away from zero and a minimiser with the same signs."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(d, n, generator=g, dtype=torch.float64) / d ** 0.5
    x_target = torch.tensor([1.5, -2.0, 0.8, -1.2], dtype=torch.float64)[:n]
    b = A @ x_target
    x0 = torch.tensor([1.0, -1.0, 1.2, -0.6], dtype=torch.float64)[:n]
    return A, b, x0


def grad(A, b, x):
    return A.T @ (A @ x - b)


def flow_rhs(A, b, x, alpha, beta):
    gr = grad(A, b, x)
    return -gr - x.abs() * (alpha * gr + torch.sign(x) * beta)


def integrate_flow(A, b, x0, *, alpha: float, beta: float, T: float, dt: float = 1e-4) -> torch.Tensor:
    """Classic RK4 with a fixed step (error ~dt^4, negligible next to the O(lr) discretisation gap)."""
    x = x0.clone()
    steps = int(round(T / dt))
    for _ in range(steps):
        k1 = flow_rhs(A, b, x, alpha, beta)
        k2 = flow_rhs(A, b, x + 0.5 * dt * k1, alpha, beta)
        k3 = flow_rhs(A, b, x + 0.5 * dt * k2, alpha, beta)
        k4 = flow_rhs(A, b, x + dt * k3, alpha, beta)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x


def ham_iterates(A, b, x0, *, alpha: float, beta: float, lr: float, T: float) -> torch.Tensor:
    """GD step then the library's hyperbolic step, k = T / lr times."""
    x = x0.clone()
    for _ in range(int(round(T / lr))):
        g = grad(A, b, x)
        x = x - lr * g
        hyperbolic_step_([x], [g], lr=lr, alpha=alpha, beta=beta, clamp=None, backend="reference")
    return x


def flow_gap(lrs: list[float], *, alpha: float = 2.0, beta: float = 0.1, T: float = 1.0, seed: int = 0
             ) -> list[tuple[float, float]]:
    """[(lr, ||x_discrete(T) - x_flow(T)||)] for each lr."""
    A, b, x0 = small_problem(seed)
    ref = integrate_flow(A, b, x0, alpha=alpha, beta=beta, T=T)
    return [(lr, float(torch.linalg.vector_norm(ham_iterates(A, b, x0, alpha=alpha, beta=beta, lr=lr, T=T) - ref)))
            for lr in lrs]
