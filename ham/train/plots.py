"""PNG plots of a run: training curves from metrics.jsonl, per-layer sparsity."""

from __future__ import annotations

import json
from pathlib import Path

PANELS = [("train/loss", "train loss", True), ("val/top1", "val top-1 (%)", False),
          ("train/l1_norm", "mean |w| (L1)", False), ("train/sign_flips", "sign flips / log interval", False),
          ("sparsity", "sparsity", False), ("lr", "learning rate", False)]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics_path: Path, out_png: Path) -> bool:
    rows = []
    for line in Path(metrics_path).read_text().splitlines() if Path(metrics_path).exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    panels = [(k, t, log) for k, t, log in PANELS if any(k in r for r in rows)]
    if not panels:
        return False
    plt = _plt()
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, (key, title, logy) in zip(axes.flat, panels):
        pts = [(r["step"], r[key]) for r in rows if key in r and r[key] is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        if logy and all(p[1] > 0 for p in pts):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def plot_layer_sparsity(layers: dict[str, float], out_png: Path) -> None:
    plt = _plt()
    names = list(layers)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), [layers[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.set_title("per-layer sparsity")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
