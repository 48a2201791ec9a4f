"""Appendix D.1 / Fig. 3: under-determined linear regression, GD vs HAM vs HAM "signed".

Setup (paper): d = 40 samples, n = 100 features, z_i ~ N(0, I), a sparse ground truth x*, y = Z x*, x0 = 0,
mean squared error, small lr, many steps; track ||x - x*|| and the training loss.

Our choices where the paper is silent or ambiguous (see results/theory/README.md for their effect):
- ground truth: k = 5 nonzero entries at random positions, values N(0, 1) (the paper does not say);
- loss f(x) = 1/(2d) ||Z x - y||^2 (mean over samples);
- "eta = 10e-4, 10e+6 steps": main reading lr = 1e-3 (10 x 1e-4 taken literally) with 1e6 steps would need
  ~2 minutes per configuration here; we run lr = 1e-2 x 1e5 steps as the main setting (same lr x steps "time"
  as 1e-3 x 1e6), and the literal readings lr = 1e-3 x 1e5 and lr = 1e-4 x 1e5 (shorter time) as checks;
- HAM: alpha = 200 (the paper's vision value; the alpha sweep covers others), beta = 0, clamp c = 5 (library
  default; it never binds at these learning rates);
- float64, all seeds and methods advanced together as one batched tensor.
The hyperbolic step is the library's formula; `hyperbolic_batched_` is the same elementwise formula with a
per-run alpha (checked against ham.optim.functional.hyperbolic_step_ in tests/test_theory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Problem:
    Z: torch.Tensor       # [S, d, n]
    y: torch.Tensor       # [S, d]
    x_star: torch.Tensor  # [S, n]


def make_problems(seeds: int, d: int = 40, n: int = 100, k: int = 5, seed0: int = 0) -> Problem:
    Zs, ys, xs = [], [], []
    for s in range(seeds):
        g = torch.Generator().manual_seed(seed0 + s)
        Z = torch.randn(d, n, generator=g, dtype=torch.float64)
        x = torch.zeros(n, dtype=torch.float64)
        support = torch.randperm(n, generator=g)[:k]
        x[support] = torch.randn(k, generator=g, dtype=torch.float64)
        Zs.append(Z)
        xs.append(x)
        ys.append(Z @ x)
    return Problem(torch.stack(Zs), torch.stack(ys), torch.stack(xs))


def grad_and_loss(p: Problem, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [S, M, n] (M runs per problem). f = 1/(2d) ||Zx - y||^2."""
    d = p.Z.shape[1]
    r = torch.einsum("sdn,smn->smd", p.Z, x) - p.y[:, None, :]
    g = torch.einsum("sdn,smd->smn", p.Z, r) / d
    return g, 0.5 * (r * r).sum(-1) / d


def hyperbolic_batched_(x, g, *, lr, alpha, beta, clamp, sign_src):
    """In place: x <- x * exp(clamp(-lr (alpha sign(src) g + beta), -c, c)); alpha broadcastable over runs."""
    e = -lr * (alpha * torch.sign(sign_src) * g + beta)
    if clamp is not None:
        e = e.clamp(-clamp, clamp)
    x.mul_(torch.exp(e))


@dataclass
class Runs:
    """M runs per problem: per-run alpha and whether the sign is taken before the base step ("signed")."""
    labels: list[str]
    alpha: torch.Tensor   # [M]
    signed: torch.Tensor  # [M] bool


def standard_runs(alpha: float = 200.0) -> Runs:
    return Runs(["GD", f"HAM (alpha={alpha:g})", f"HAM signed (alpha={alpha:g})"],
                torch.tensor([0.0, alpha, alpha], dtype=torch.float64), torch.tensor([False, False, True]))


def alpha_runs(alphas: list[float]) -> Runs:
    return Runs([f"alpha={a:g}" for a in alphas], torch.tensor(alphas, dtype=torch.float64),
                torch.zeros(len(alphas), dtype=torch.bool))


def log_checkpoints(steps: int, points: int = 60) -> list[int]:
    pts = sorted({int(round(10 ** (i * math.log10(steps) / (points - 1)))) for i in range(points)} | {steps})
    return [p for p in pts if 1 <= p <= steps]


@torch.no_grad()
def run(p: Problem, runs: Runs, *, lr: float, steps: int, beta: float = 0.0, clamp: float | None = 5.0,
        points: int = 60) -> dict:
    """Advance all runs on all problems together. Returns curves [T, S, M] of distance and loss."""
    S, n = p.x_star.shape
    M = len(runs.labels)
    x = torch.zeros(S, M, n, dtype=torch.float64)
    alpha = runs.alpha[None, :, None]
    signed = runs.signed[None, :, None]
    marks = set(log_checkpoints(steps, points))
    ts, dist, loss = [], [], []
    for k in range(1, steps + 1):
        g, _ = grad_and_loss(p, x)
        before = torch.sign(x)
        x.sub_(lr * g)                                   # GD step -> x_{k+1/2}
        src = torch.where(signed, before, x)             # HYP* (sign after) or "signed" (sign before)
        hyperbolic_batched_(x, g, lr=lr, alpha=alpha, beta=beta, clamp=clamp, sign_src=src)
        if k in marks:
            _, f = grad_and_loss(p, x)
            ts.append(k)
            dist.append(torch.linalg.vector_norm(x - p.x_star[:, None, :], dim=-1))
            loss.append(f)
    return {"labels": runs.labels, "steps": ts, "dist": torch.stack(dist), "loss": torch.stack(loss), "x": x}
