"""Regenerate results/theory/: `python -m ham.theory [--out results/theory] [--quick]`.

Figures (PNG) with their data (CSV) and a README.md with the numbers:
  fig3_linreg.png / linreg_curves.csv     GD vs HAM vs HAM signed (Appendix D.1, Fig. 3), main lr reading
  linreg_readings.csv                     the same at the other readings of "lr = 10e-4, 10e+6 steps"
  linreg_alpha_sweep.png / .csv           final distance to x* over alpha (beta = 0)
  flow_gap.csv / flow_gap.png             Thm 4.2: discrete HAM vs its gradient flow, gap ~ lr
  fig2b_bregman.png / bregman.csv         normalised R_alpha for several alpha (L2 -> L1, Thm 4.6)
  fig1_inverse_metric.png / .csv          1 + alpha|x| vs GD (1) vs m*w sqrt(x^2 + gamma^2)
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from ham.theory import bregman, flow, linreg


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def summarize(res: dict) -> list[dict]:
    """Per method: final distance/loss (mean, std over seeds) and the first step with loss < 1e-10."""
    out = []
    for m, label in enumerate(res["labels"]):
        d, f = res["dist"][-1, :, m], res["loss"][-1, :, m]
        mean_loss = res["loss"][:, :, m].mean(1)
        hit = [t for t, v in zip(res["steps"], mean_loss.tolist()) if v < 1e-10]
        out.append({"method": label, "dist_mean": d.mean().item(), "dist_std": d.std().item(),
                    "loss_mean": f.mean().item(), "steps_to_1e-10": hit[0] if hit else None})
    return out


def linreg_experiments(out: Path, quick: bool) -> dict:
    seeds = 4 if quick else 10
    main_lr, main_steps = 1e-3, (10_000 if quick else 100_000)
    p = linreg.make_problems(seeds)
    res = linreg.run(p, linreg.standard_runs(200.0), lr=main_lr, steps=main_steps)
    rows = []
    for ti, t in enumerate(res["steps"]):
        for m, label in enumerate(res["labels"]):
            d, f = res["dist"][ti, :, m], res["loss"][ti, :, m]
            rows.append([t, label, d.mean().item(), d.std().item(), f.mean().item()])
    write_csv(out / "linreg_curves.csv", ["step", "method", "dist_mean", "dist_std", "loss_mean"], rows)

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for m, label in enumerate(res["labels"]):
        axes[0].plot(res["steps"], res["dist"][:, :, m].mean(1), label=label)
        axes[1].plot(res["steps"], res["loss"][:, :, m].mean(1), label=label)
    axes[0].set(xscale="log", xlabel="step", ylabel="||x - x*|| (mean over seeds)",
                title=f"distance to sparse ground truth (lr={main_lr:g})")
    axes[1].set(xscale="log", yscale="log", xlabel="step", ylabel="training loss", title="training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fig3_linreg.png", dpi=120)
    plt.close(fig)

    readings = [(1e-3, main_steps), (1e-4, main_steps * (1 if quick else 3)), (3e-3, main_steps)]
    read_rows, summaries = [], {}
    for lr, steps in readings:
        r = res if (lr, steps) == (main_lr, main_steps) else linreg.run(p, linreg.standard_runs(200.0), lr=lr,
                                                                         steps=steps)
        summaries[(lr, steps)] = summarize(r)
        for s in summaries[(lr, steps)]:
            read_rows.append([lr, steps, s["method"], s["dist_mean"], s["dist_std"], s["loss_mean"],
                              s["steps_to_1e-10"]])
    write_csv(out / "linreg_readings.csv", ["lr", "steps", "method", "dist_mean", "dist_std", "loss_mean",
                                            "steps_to_loss_1e-10"], read_rows)

    alphas = [0.0, 1.0, 10.0, 50.0, 100.0, 200.0, 400.0]
    sweep = linreg.run(p, linreg.alpha_runs(alphas), lr=main_lr, steps=main_steps)
    sw = summarize(sweep)
    write_csv(out / "linreg_alpha_sweep.csv", ["alpha", "dist_mean", "dist_std", "loss_mean"],
              [[a, s["dist_mean"], s["dist_std"], s["loss_mean"]] for a, s in zip(alphas, sw)])
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar([max(a, 0.3) for a in alphas], [s["dist_mean"] for s in sw], yerr=[s["dist_std"] for s in sw],
                marker="o", capsize=3)
    ax.set(xscale="log", xlabel="alpha (0 plotted at 0.3)", ylabel="final ||x - x*||",
           title=f"alpha sweep, beta=0, lr={main_lr:g}, {main_steps} steps")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "linreg_alpha_sweep.png", dpi=120)
    plt.close(fig)
    return {"seeds": seeds, "main": (main_lr, main_steps), "readings": summaries, "sweep": list(zip(alphas, sw))}


def flow_experiment(out: Path) -> list[tuple[float, float]]:
    gaps = flow.flow_gap([0.04, 0.02, 0.01, 0.005, 0.0025])
    write_csv(out / "flow_gap.csv", ["lr", "gap_at_T1"], [list(g) for g in gaps])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.loglog([g[0] for g in gaps], [g[1] for g in gaps], "o-", label="||x_k - x(k lr)||, T = 1")
    ax.loglog([g[0] for g in gaps], [gaps[0][1] * g[0] / gaps[0][0] for g in gaps], "--", label="slope 1")
    ax.set(xlabel="lr", ylabel="gap to gradient flow", title="Thm 4.2: discrete HAM -> flow")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "flow_gap.png", dpi=120)
    plt.close(fig)
    return gaps


def geometry_figures(out: Path) -> None:
    plt = _plt()
    x = torch.linspace(-1, 1, 401, dtype=torch.float64)
    alphas = [0.01, 1.0, 10.0, 100.0, 1e4]
    curves = {a: bregman.normalized_r_alpha(x, a) for a in alphas}
    write_csv(out / "bregman.csv", ["x", *[f"alpha={a:g}" for a in alphas]],
              [[x[i].item(), *[curves[a][i].item() for a in alphas]] for i in range(len(x))])
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for a in alphas:
        ax.plot(x, curves[a], label=f"alpha={a:g}")
    ax.plot(x, x * x, "k:", lw=1, label="x^2")
    ax.plot(x, x.abs(), "k--", lw=1, label="|x|")
    ax.set(xlabel="x", ylabel="R_alpha(x) / R_alpha(1)", title="Fig. 2b: R_alpha, L2 -> L1")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fig2b_bregman.png", dpi=120)
    plt.close(fig)

    xs = torch.linspace(-2, 2, 401, dtype=torch.float64)
    cols = {"GD": torch.ones_like(xs)}
    for a in (1.0, 10.0):
        cols[f"HAM alpha={a:g}"] = bregman.inverse_metric_ham(xs, a)
    for g in (0.01, 0.1, 1.0):
        cols[f"m*w gamma={g:g}"] = bregman.inverse_metric_mw(xs, g)
    write_csv(out / "fig1_inverse_metric.csv", ["x", *cols], [[xs[i].item(), *[c[i].item() for c in cols.values()]]
                                                               for i in range(len(xs))])
    fig, ax = plt.subplots(figsize=(4.8, 3.6))
    for k, v in cols.items():
        ax.plot(xs, v, label=k, ls="--" if k.startswith("m*w") else "-")
    ax.set(xlabel="x", ylabel="inverse metric g^-1(x)", ylim=(0, 6), title="Fig. 1: inverse metrics")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "fig1_inverse_metric.png", dpi=120)
    plt.close(fig)


def write_readme(out: Path, lin: dict, gaps, seconds: float, quick: bool) -> str:
    lr, steps = lin["main"]
    lines = ["# Theory experiments (regenerate with `uv run python -m ham.theory`" + (" --quick" if quick else "")
             + ")", "",
             f"Under-determined linear regression (Appendix D.1): d=40, n=100, 5-sparse x*, x0=0, MSE, "
             f"{lin['seeds']} seeds (mean ± std). HAM: alpha=200, beta=0, clamp 5. Choices: `ham/theory/linreg.py`.",
             "", "| lr | steps | method | final ‖x−x*‖ | final loss | first logged step with loss < 1e-10 |",
             "|---|---|---|---|---|---|"]
    for (l, s), rows in lin["readings"].items():
        for r in rows:
            lines.append(f"| {l:g} | {s} | {r['method']} | {r['dist_mean']:.4f} ± {r['dist_std']:.4f} | "
                         f"{r['loss_mean']:.2e} | {r['steps_to_1e-10'] or 'not reached'} |")
    lines += ["", f"alpha sweep (beta=0, lr={lr:g}, {steps} steps): final ‖x−x*‖ = " +
              ", ".join(f"{a:g}: {s['dist_mean']:.3f}" for a, s in lin["sweep"]), "",
              "Thm 4.2 (gradient-flow limit), gap at T=1 between discrete HAM (alpha=2, beta=0.1) and an RK4 "
              "solution of dx = -∇f - |x|(alpha ∇f + sign(x) beta) dt: " +
              ", ".join(f"lr={a:g}: {b:.2e}" for a, b in gaps) + " (first order in lr).", "",
              f"Total time: {seconds:.0f} s on this machine."]
    text = "\n".join(lines) + "\n"
    (out / "README.md").write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/theory")
    ap.add_argument("--quick", action="store_true", help="seconds-long version (fewer seeds and steps)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lin = linreg_experiments(out, args.quick)
    gaps = flow_experiment(out)
    geometry_figures(out)
    print(write_readme(out, lin, gaps, time.perf_counter() - t0, args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
