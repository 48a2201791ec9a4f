"""Appendix D.1 / Fig. 3: under-determined linear regression, GD vs GD+HAM vs GD+HAM "signed".

Setup (paper): d = 40 samples, n = 100 features, z_i ~ N(0, I), a sparse ground truth x*, y = Z x*, x0 = 0,
mean squared error, small lr, many steps; track ||x - x*|| and the training loss.

Choices where the paper is silent or ambiguous (results/theory/README.md reports their effect):
- ground truth: k = 5 nonzero entries at uniformly random positions, values N(0, 1); one problem per seed
  (seed s draws Z, the support and the values from torch.Generator().manual_seed(s));
- loss f(x) = 1/(2d) ||Z x - y||^2 (mean over samples), so grad f = Z^T (Z x - y) / d;
- "eta = 10e-4, 10e+6 steps": the trajectory depends on lr only; the step count only decides where it is cut.
  We run lr = 1e-3 (10e-4 read literally) as the main setting and lr = 1e-4 (read as 10^-4) and 3e-3 as
  checks, each with a budget of 10^7 steps (10e+6 read literally; 10^6 is a checkpoint on the way). A run stops
  early once EVERY run's loss is below ``stop_loss`` (1e-16, i.e. a residual ||Zx - y|| ~ 1e-7): from there GD
  moves by at most ||Z x - y|| / sigma_min(Z) ~ 3e-8 more (its remaining path is the projection onto {Zx = y}),
  and running on to 2e5 steps (loss ~1e-27) changed no final distance by more than 3e-13 in a check we made,
  so every reported number is final; the stop step is reported. Even lr = 1e-4 stops before 10^6 steps, so the
  10^6 and 10^7 budgets give the same numbers.
- HAM: alpha = 200 (the paper's vision value; the alpha sweep covers others), beta = 0, clamp = None (the
  paper's formula; we record the largest |exponent| seen, which stays far below the library default c = 5, so
  the default would give bit-identical results);
- "signed": the sign of x_k (before the GD step) instead of x_{k+1/2}. From x0 = 0 its first hyperbolic step is
  a no-op (sign(0) = 0), while the deployed step already acts on x_{1/2} = -lr grad f(0).
- beta = 0 throughout (Thm 4.5's setting).
- float64; every seed and method advances together as one [seeds, methods, n] tensor. The hyperbolic step is
  the library's own ham.optim.functional.hyperbolic_step_ (one call per step for all runs, see ``run``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ham.errors import ConfigError
from ham.optim.functional import hyperbolic_step_


@dataclass(frozen=True)
class Problem:
    Z: torch.Tensor       # [S, d, n]
    y: torch.Tensor       # [S, d]
    x_star: torch.Tensor  # [S, n]


def make_problems(seeds: int, d: int = 40, n: int = 100, k: int = 5, seed0: int = 0) -> Problem:
    """One random problem per seed (seed0, seed0 + 1, ...), float64."""
    if not 1 <= k <= n:
        raise ConfigError(f"support size k must be in [1, n={n}], got {k}")
    Zs, xs = [], []
    for s in range(seeds):
        g = torch.Generator().manual_seed(seed0 + s)
        Z = torch.randn(d, n, generator=g, dtype=torch.float64)
        x = torch.zeros(n, dtype=torch.float64)
        x[torch.randperm(n, generator=g)[:k]] = torch.randn(k, generator=g, dtype=torch.float64)
        Zs.append(Z)
        xs.append(x)
    Z, x_star = torch.stack(Zs), torch.stack(xs)
    return Problem(Z, torch.einsum("sdn,sn->sd", Z, x_star), x_star)


def min_norm_solution(p: Problem) -> torch.Tensor:
    """argmin ||x||_2 s.t. Zx = y: where gradient descent from x0 = 0 converges. [S, n]"""
    return torch.linalg.lstsq(p.Z, p.y.unsqueeze(-1), driver="gelsd").solution.squeeze(-1)


@dataclass(frozen=True)
class Method:
    label: str
    alpha: float = 0.0       # 0: plain gradient descent
    signed: bool = False     # sign of x_k (before the GD step) instead of x_{k+1/2}


def standard_methods(alpha: float = 200.0) -> list[Method]:
    return [Method("GD"), Method(f"HAM alpha={alpha:g}", alpha), Method(f"HAM signed alpha={alpha:g}", alpha, signed=True)]


def alpha_sweep_methods(alphas: list[float], signed: bool = True) -> list[Method]:
    """alpha = 0 is GD; every alpha > 0 as HAM and (if ``signed``) HAM signed."""
    out = []
    for a in alphas:
        out.append(Method("GD" if a == 0 else f"HAM alpha={a:g}", a))
        if signed and a != 0:
            out.append(Method(f"HAM signed alpha={a:g}", a, signed=True))
    return out


def checkpoints(max_steps: int, points: int = 60) -> list[int]:
    """Log-spaced steps in [1, max_steps], every power of ten included (so 10^6 is always logged)."""
    pts = {round(10 ** (i * math.log10(max_steps) / (points - 1))) for i in range(points)}
    pts |= {10**e for e in range(int(math.log10(max_steps)) + 1)} | {max_steps}
    return sorted(p for p in pts if 1 <= p <= max_steps)


@dataclass
class Result:
    methods: list[Method]
    lr: float
    steps: list[int]            # logged steps (<= stop_step)
    dist: torch.Tensor          # [T, M, S] ||x - x*||
    loss: torch.Tensor          # [T, M, S] f(x)
    x: torch.Tensor             # [M, S, n] final iterates
    stop_step: int              # steps actually taken
    hit: dict[float, torch.Tensor] = field(default_factory=dict)  # loss level -> [M, S] first step below (-1: never)
    max_exponent: torch.Tensor | None = None                      # [M] largest |lr (alpha sign g + beta)| seen

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.methods]

    def final_dist(self) -> torch.Tensor:  # [M, S]
        return self.dist[-1]

    def dist_at(self, step: int) -> torch.Tensor:
        """[M, S] distance at ``step``, or the final one when the run stopped (converged) before it."""
        if step >= self.stop_step:
            return self.dist[-1]
        return self.dist[self.steps.index(step)]


def _loss_and_grad(p: Problem, Zt: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x: [S, M, n] -> loss [S, M], grad [S, M, n] (batched over the seeds with bmm)."""
    d = p.Z.shape[1]
    r = torch.bmm(x, Zt) - p.y[:, None, :]                            # [S, M, d]
    return (0.5 / d) * (r * r).sum(-1), torch.bmm(r, p.Z).div_(d)


@torch.no_grad()
def run(p: Problem, methods: list[Method], *, lr: float, max_steps: int, clamp: float | None = None,
        stop_loss: float = 1e-16, points: int = 60, hit_levels: tuple[float, ...] = (1e-8, 1e-12),
        backend: str = "foreach") -> Result:
    """GD step, then the library's hyperbolic step (beta = 0), for all methods and seeds at once.

    Each method's alpha is folded into the gradient it hands to ``hyperbolic_step_`` (called with alpha = 1):
    the exponent -lr * alpha * sign(s) * g is the same number, and ONE library call then serves every method
    (alpha = 0, plain GD, gets a zero exponent: exp(0) = 1 exactly). The sign source s is x_{k+1/2} itself for
    the deployed step and the remembered sign(x_k) for "signed". tests/test_theory.py checks this against the
    ``HAM`` optimizer class around torch.optim.SGD.
    Stops after ``max_steps`` or as soon as every run has loss < ``stop_loss`` (or has diverged).
    """
    if not lr > 0 or max_steps < 1:
        raise ConfigError(f"lr must be > 0 and max_steps >= 1, got lr={lr}, max_steps={max_steps}")
    S, n = p.x_star.shape
    M = len(methods)
    x = torch.zeros(S, M, n, dtype=torch.float64)
    Zt = p.Z.transpose(1, 2).contiguous()
    alpha = torch.tensor([m.alpha for m in methods], dtype=torch.float64)[None, :, None]
    signed = torch.tensor([m.signed for m in methods])[None, :, None]
    any_signed = bool(signed.any())
    max_expo = torch.zeros(M, dtype=torch.float64)
    marks = set(checkpoints(max_steps, points))
    hit = {lv: torch.full((S, M), -1, dtype=torch.long) for lv in hit_levels}
    steps, dists, losses = [], [], []

    def log(k: int, f: torch.Tensor) -> None:
        steps.append(k)
        dists.append(torch.linalg.vector_norm(x - p.x_star[:, None, :], dim=-1).T)
        losses.append(f.T)

    f, g = _loss_and_grad(p, Zt, x)
    k = 0
    while k < max_steps:
        before = torch.sign(x) if any_signed else None
        x.sub_(lr * g)                                        # GD: x_{k+1/2}
        ag = g.mul_(alpha)                                    # g is recomputed below, so scale it in place
        src = torch.where(signed, before, x) if any_signed else x
        hyperbolic_step_([x], [ag], lr=lr, alpha=1.0, beta=0.0, clamp=clamp, signs=[src], backend=backend)
        max_expo = torch.maximum(max_expo, lr * ag.abs().amax((0, 2)))  # to show a clamp c would never bind
        k += 1
        f, g = _loss_and_grad(p, Zt, x)                       # loss at x_k, gradient for the next step
        for lv, h in hit.items():
            h.masked_fill_((h < 0) & (f < lv), k)
        if k in marks:
            log(k, f)
        if k % 100 == 0 and bool(((f < stop_loss) | ~torch.isfinite(f)).all()):
            break
    if not steps or steps[-1] != k:
        log(k, f)
    return Result(methods, lr, steps, torch.stack(dists), torch.stack(losses), x.transpose(0, 1).contiguous(), k,
                  {lv: h.T.contiguous() for lv, h in hit.items()}, max_expo)
