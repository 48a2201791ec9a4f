"""Lemma 4.4 / Fig. 2(b), Thm 4.5 and Fig. 1: HAM's Bregman function R_alpha, its constrained minimiser, and the
inverse metrics ("artificial learning rates") of GD, m*w and HAM.

Per coordinate (beta = 0, Lemma 4.4):
    R_alpha(x) = ((alpha|x| + 1) ln(alpha|x| + 1) - alpha|x|) / alpha^2  -  x sign(x0) ln(1 + alpha|x0|) / alpha,
    R_alpha'' = 1 / (1 + alpha|x|)  (the HAM metric),  R_alpha'(x0) = 0.
With x0 = 0 the linear term vanishes. Thm 4.6: R_alpha ~ x^2/2 as alpha -> 0 and ~ |x| ln(alpha|x|) / alpha (an L1
shape) as alpha -> inf. Thm 4.5: on under-determined least squares, HAM's gradient flow from x0 converges to
argmin {R_alpha(x) : Z x = y}; ``constrained_minimizer`` computes that point.
Inverse metrics (Table 1): GD 1, m*w sqrt(x^2 + gamma^2), HAM 1 + alpha|x|.
"""

from __future__ import annotations

import torch


def r_alpha(x: torch.Tensor, alpha: float, x0: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Elementwise R_alpha (sum over coordinates for the vector version); alpha >= 0 (alpha = 0: x^2/2 - x0 x)."""
    x0 = torch.as_tensor(x0, dtype=x.dtype)
    if alpha == 0:
        return 0.5 * x * x - x0 * x
    a = alpha * x.abs()
    # log1p keeps the small-alpha limit accurate (the naive form cancels catastrophically)
    return ((a + 1) * torch.log1p(a) - a) / alpha**2 - x * torch.sign(x0) * torch.log1p(alpha * x0.abs()) / alpha


def grad_r_alpha(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """R_alpha'(x) for x0 = 0: the mirror map sign(x) ln(1 + alpha|x|) / alpha."""
    return x if alpha == 0 else torch.sign(x) * torch.log1p(alpha * x.abs()) / alpha


def normalized_r_alpha(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """R_alpha (x0 = 0) scaled to 1 at |x| = 1, so the shapes of different alphas can be compared (Fig. 2b)."""
    return r_alpha(x, alpha) / r_alpha(torch.ones((), dtype=x.dtype), alpha)


def constrained_minimizer(Z: torch.Tensor, y: torch.Tensor, alpha: float, *, tol: float = 1e-12,
                          max_iter: int = 200) -> torch.Tensor:
    """argmin R_alpha(x) s.t. Z x = y (x0 = 0), batched: Z [S, d, n], y [S, d] -> [S, n].

    Solved in the dual: x(lam) = (grad R)^-1(Z^T lam) = sign(u) expm1(alpha|u|) / alpha with u = Z^T lam, and
    Newton's method with backtracking on the convex dual phi(lam) = R*(Z^T lam) - lam^T y.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0 (R_alpha is a Bregman function only then), got {alpha}")
    if alpha == 0:
        return torch.linalg.lstsq(Z, y.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)

    def primal(u):
        return torch.sign(u) * torch.expm1(alpha * u.abs()) / alpha

    def dual_obj(lam):
        u = torch.einsum("sdn,sd->sn", Z, lam)
        a = alpha * u.abs()
        return ((torch.expm1(a) - a) / alpha**2).sum(-1) - (lam * y).sum(-1)

    lam = torch.zeros_like(y)
    for _ in range(max_iter):
        u = torch.einsum("sdn,sd->sn", Z, lam)
        resid = torch.einsum("sdn,sn->sd", Z, primal(u)) - y            # = grad phi
        if resid.abs().max() < tol * (1 + y.abs().max()):
            break
        H = torch.einsum("sdn,sn,sen->sde", Z, torch.exp(alpha * u.abs()), Z)
        step = torch.linalg.solve(H, resid)
        t = torch.ones(y.shape[0], dtype=y.dtype)
        f0 = dual_obj(lam)
        slope = (resid * step).sum(-1)
        for _ in range(60):  # Armijo backtracking per problem (with slack for rounding near the optimum)
            bad = dual_obj(lam - t[:, None] * step) > f0 - 1e-4 * t * slope + 1e-13 * f0.abs()
            if not bool(bad.any()):
                break
            t = torch.where(bad, t / 2, t)
        lam = lam - t[:, None] * step
    return primal(torch.einsum("sdn,sd->sn", Z, lam))


def inverse_metric_ham(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1 + alpha * x.abs()


def inverse_metric_mw(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.sqrt(x * x + gamma**2)
