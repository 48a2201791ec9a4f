"""PNG figures of runs (matplotlib, Agg backend: no display needed).

    plot_curves          one run's metrics.jsonl -> a grid of panels (loss, val top-1, L1, sign flips, sparsity, lr)
    plot_layer_sparsity  bar chart of per-layer sparsity
    compare_runs         one metric of several runs on one axis (sweeps; the paper's Fig. 4/5 L1 curves)

    python -m ham.train.plots RUN_DIR RUN_DIR [...] [--key train/l1_norm] [--labels A B] [--out l1.png]

Every function returns True when it wrote a file and False when there was nothing to draw (it then writes nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ham.train.sinks import read_jsonl

# (title, [(key, legend label)], log y-axis when all values are positive)
PANELS: list[tuple[str, list[tuple[str, str]], bool]] = [
    ("train loss", [("train/loss", "train")], True),
    ("val top-1 (%)", [("val/top1", "top-1")], False),
    ("mean |w| (L1)", [("train/l1_norm", "L1")], False),
    ("sign flips (fraction)", [("train/sign_flips", "since previous log"),
                               ("train/sign_flips_init", "since init")], False),
    ("sparsity", [("sparsity", "global")], False),
    ("learning rate", [("lr", "lr")], False),
]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) for rows that hold a number under `key`, sorted by step; a step logged twice keeps its last
    value (a resumed run whose jsonl was not truncated)."""
    by_step: dict[float, float] = {}
    for r in rows:
        v, s = r.get(key), r.get("step")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(s, (int, float)):
            by_step[s] = float(v)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def plot_curves(metrics_jsonl_path: str | Path, out_png: str | Path) -> bool:
    rows = read_jsonl(metrics_jsonl_path)
    panels = []
    for title, keys, logy in PANELS:
        lines = [(label, *_series(rows, key)) for key, label in keys]
        lines = [ln for ln in lines if ln[1]]
        if lines:
            panels.append((title, lines, logy))
    if not panels:
        return False
    plt = _plt()
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False)
    for ax, (title, lines, logy) in zip(axes.flat, panels):
        for label, steps, values in lines:
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=label)
        if len(lines) > 1:
            ax.legend(fontsize=7)
        if logy and all(v > 0 for _, _, vals in lines for v in vals):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def plot_layer_sparsity(layer_sparsity: Mapping[str, float], out_png: str | Path) -> bool:
    if not layer_sparsity:
        return False
    plt = _plt()
    names = list(layer_sparsity)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.25 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), [layer_sparsity[n] for n in names])
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=6)
    ax.set_ylabel("sparsity")
    ax.set_ylim(0, 1)
    ax.set_title("per-layer sparsity")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def compare_runs(run_dirs: Sequence[str | Path], out_png: str | Path, key: str = "val/top1",
                 labels: Sequence[str] | None = None) -> bool:
    """`key` against step for each run directory (its metrics.jsonl), one line per run; runs without the key are
    left out of the plot. Labels default to the directory names."""
    labels = list(labels) if labels is not None else [Path(d).name for d in run_dirs]
    curves = [(label, *_series(read_jsonl(Path(d) / "metrics.jsonl"), key)) for d, label in zip(run_dirs, labels)]
    curves = [c for c in curves if c[1]]
    if not curves:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for label, steps, values in curves:
        ax.plot(steps, values, marker="o" if len(steps) < 30 else None, ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """One metric of several run directories on one axis, e.g. Fig. 4/5: L1 over training, HAM vs baseline vs
    SAM (`python -m ham.train.plots runs/a runs/b runs/c --key train/l1_norm --labels HAM baseline SAM`)."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m ham.train.plots", description=main.__doc__)
    ap.add_argument("run_dirs", nargs="+", type=Path)
    ap.add_argument("--key", default="train/l1_norm", help="a metrics.jsonl key (default: train/l1_norm)")
    ap.add_argument("--labels", nargs="+", help="one per run directory (default: the directory names)")
    ap.add_argument("--out", type=Path, default=Path("compare.png"))
    args = ap.parse_args(argv)
    missing = [str(d) for d in args.run_dirs if not (d / "metrics.jsonl").is_file()]
    if missing:
        print(f"error: no metrics.jsonl in {', '.join(missing)} (a train.py run directory is expected)",
              file=sys.stderr)
        return 2
    if args.labels and len(args.labels) != len(args.run_dirs):
        print(f"error: --labels has {len(args.labels)} names for {len(args.run_dirs)} run directories",
              file=sys.stderr)
        return 2
    if not compare_runs(args.run_dirs, args.out, key=args.key, labels=args.labels):
        print(f"error: no run has {args.key!r} in its metrics.jsonl", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
