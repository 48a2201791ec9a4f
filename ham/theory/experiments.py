"""The theory experiments as plain computations (no files): what ``python -m ham.theory`` runs and reports.

Two sizes: FULL (the committed results, a couple of minutes on 2 cores) and QUICK (seconds, a smoke version).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ham.theory import bregman, flow, linreg


@dataclass(frozen=True)
class Settings:
    seeds: int
    main_lr: float                          # Fig. 3 and the alpha sweep
    max_steps: int                          # budget per run (runs stop early once converged, see linreg.run)
    alphas: tuple[float, ...]               # sweep at beta = 0; 0 is GD
    main_alpha: float
    readings: tuple[tuple[float, int], ...]  # other (lr, max_steps) readings of "eta = 10e-4, 10e+6 steps"
    flow_lrs: tuple[float, ...]
    flow_dt: float                          # RK4 step of the reference flow
    stop_loss: float = 1e-16


FULL = Settings(seeds=10, main_lr=1e-3, max_steps=10**7, alphas=(0, 1, 10, 50, 100, 200, 400), main_alpha=200,
                readings=((1e-4, 10**7), (3e-3, 10**7)), flow_lrs=tuple(2.0**-i for i in range(5, 10)),
                flow_dt=2.0**-13)
QUICK = Settings(seeds=3, main_lr=1e-3, max_steps=20_000, alphas=(0, 10, 200), main_alpha=200,
                 readings=((3e-3, 10_000),), flow_lrs=tuple(2.0**-i for i in range(5, 8)), flow_dt=2.0**-10)


@dataclass
class LinregOutcome:
    problem: linreg.Problem
    sweep: linreg.Result                      # every alpha (HAM and signed) at main_lr
    readings: list[linreg.Result]             # GD / HAM / signed at the other lrs
    theory: dict[float, torch.Tensor]         # alpha -> argmin R_alpha s.t. Zx = y  [S, n]  (Thm 4.5)
    seconds: dict[str, float]

    def all_results(self) -> list[linreg.Result]:
        return [self.sweep, *self.readings]


def run_linreg(s: Settings) -> LinregOutcome:
    p = linreg.make_problems(s.seeds)
    secs = {}
    t = time.perf_counter()
    sweep = linreg.run(p, linreg.alpha_sweep_methods(list(s.alphas)), lr=s.main_lr, max_steps=s.max_steps,
                       stop_loss=s.stop_loss)
    secs[f"lr={s.main_lr:g}"] = time.perf_counter() - t
    readings = []
    for lr, steps in s.readings:
        t = time.perf_counter()
        readings.append(linreg.run(p, linreg.standard_methods(s.main_alpha), lr=lr, max_steps=steps,
                                   stop_loss=s.stop_loss))
        secs[f"lr={lr:g}"] = time.perf_counter() - t
    theory = {float(a): bregman.constrained_minimizer(p.Z, p.y, float(a)) for a in s.alphas}
    return LinregOutcome(p, sweep, readings, theory, secs)


def main_methods(res: linreg.Result, alpha: float) -> list[int]:
    """Indices of GD, HAM(alpha) and HAM signed(alpha) in ``res``."""
    return [i for i, m in enumerate(res.methods) if m.alpha in (0, alpha)]


def method_summary(out: LinregOutcome, res: linreg.Result, i: int) -> dict:
    """Mean (and std) over seeds of the final numbers of method i of ``res``."""
    m = res.methods[i]
    d = res.final_dist()[i]
    x_r = out.theory.get(float(m.alpha))
    if x_r is None:
        x_r = bregman.constrained_minimizer(out.problem.Z, out.problem.y, m.alpha)
        out.theory[float(m.alpha)] = x_r
    hits = {lv: h[i] for lv, h in res.hit.items()}
    return {
        "lr": res.lr, "method": m.label, "alpha": m.alpha, "signed": m.signed, "stop_step": res.stop_step,
        "dist_mean": d.mean().item(), "dist_std": d.std().item(), "loss_mean": res.loss[-1, i].mean().item(),
        **{f"steps_to_loss_{lv:g}": (h.double().mean().item() if bool((h >= 0).all()) else None)
           for lv, h in hits.items()},
        "dist_to_theory": torch.linalg.vector_norm(res.x[i] - x_r, dim=-1).mean().item(),
        "theory_dist_to_xstar": torch.linalg.vector_norm(x_r - out.problem.x_star, dim=-1).mean().item(),
        "max_exponent": res.max_exponent[i].item(),
    }


def paired(res: linreg.Result, a: int, b: int, level: float = 1e-8) -> dict:
    """Per-seed comparisons of methods a and b: how many seeds a ends closer to x* / reaches ``level`` sooner."""
    da, db = res.final_dist()[a], res.final_dist()[b]
    ha, hb = res.hit[level][a], res.hit[level][b]
    return {"seeds": da.numel(), "a_closer": int((da < db).sum()), "a_sooner": int((ha < hb).sum()),
            "b_sooner": int((hb < ha).sum()), "max_abs_dist_diff": (da - db).abs().max().item()}


def run_flow(s: Settings) -> dict[str, list[tuple[float, float]]]:
    """Thm 4.2 gaps for HAM with (alpha, beta) = (2, 0.1) and (20, 0). (The signed variant is the same algorithm
    on this problem, which has no sign flips.)"""
    return {f"alpha={a:g}, beta={b:g}": flow.flow_gap(list(s.flow_lrs), alpha=a, beta=b, dt=s.flow_dt)
            for a, b in ((2.0, 0.1), (20.0, 0.0))}
