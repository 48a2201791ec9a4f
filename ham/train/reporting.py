"""Where metrics go: metrics.jsonl (always), W&B (logger=wandb), a progress bar, plots, the summary table.

Only rank 0 writes; other ranks get a `Sinks` whose methods do nothing.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


class JsonlSink:
    def __init__(self, path: Path, resume_step: int = 0):
        self.path = Path(path)
        if self.path.exists():
            self.truncate_after(resume_step)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after the checkpoint we resume from (they will be logged again)."""
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
        self.path.write_text("".join(k + "\n" for k in keep))

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


class WandbSink:
    def __init__(self, cfg, run_dir: Path, run_id: str | None):
        import wandb

        w = cfg.logger.wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=w.project, entity=w.entity, group=w.group, tags=list(w.tags or []),
                              name=w.name or run_dir.name, mode=w.mode, dir=str(run_dir), id=run_id,
                              resume="allow", config=OmegaConf.to_container(cfg, resolve=True))
        self.id = self.run.id if self.run is not None else None

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def finish(self, summary: dict[str, Any]) -> None:
        for k, v in summary.items():
            if isinstance(v, (int, float, str)):
                self.run.summary[k] = v
        self.run.finish()


class ProgressBar:
    """tqdm on a TTY; otherwise one plain line every ~5% (no carriage-return spam in SLURM logs)."""

    def __init__(self, total: int, initial: int, enabled: bool, tty: bool):
        self.total, self.n, self.enabled, self.tty = total, initial, enabled, tty
        self.postfix: dict[str, Any] = {}
        self.bar = None
        self.every = max(1, total // 20)
        if enabled and tty:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, dynamic_ncols=True, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and (self.n % self.every == 0 or self.n == self.total):
            post = " ".join(f"{k}={v}" for k, v in self.postfix.items())
            print(f"step {self.n}/{self.total} ({100 * self.n / self.total:.0f}%) {post}", file=sys.stderr,
                  flush=True)

    def set_postfix(self, d: dict[str, Any]) -> None:
        self.postfix = d
        if self.bar is not None:
            self.bar.set_postfix(d, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Sinks:
    def __init__(self, cfg, run_dir: Path, *, enabled: bool, resume_step: int, wandb_id: str | None):
        self.cfg, self.run_dir, self.enabled = cfg, Path(run_dir), enabled
        self.last: dict[str, Any] = {}
        self.jsonl = JsonlSink(self.run_dir / "metrics.jsonl", resume_step) if enabled else None
        self.wandb = None
        if enabled and OmegaConf.select(cfg, "logger.wandb") is not None and cfg.logger.wandb.mode != "disabled":
            self.wandb = WandbSink(cfg, self.run_dir, wandb_id)
        self.wandb_id = self.wandb.id if self.wandb else wandb_id

    def log(self, row: dict[str, Any]) -> None:
        self.last.update(row)
        if not self.enabled:
            return
        self.jsonl.log(row)
        if self.wandb:
            self.wandb.log(row)

    def progress(self, total: int, initial: int) -> ProgressBar:
        setting = self.cfg.trainer.progress_bar
        tty = sys.stderr.isatty()
        return ProgressBar(total, initial, enabled=self.enabled and setting is not False,
                           tty=tty if setting == "auto" else bool(setting))

    def finish(self, summary: dict[str, Any]) -> None:
        if not self.enabled:
            return
        from ham.train.plots import plot_curves, plot_layer_sparsity

        plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
        if summary.get("sparsity_per_layer") and summary.get("sparsity", 0) > 0:
            plot_layer_sparsity(summary["sparsity_per_layer"], self.run_dir / "layer_sparsity.png")
        if self.wandb:
            self.wandb.finish(summary)


def make_sinks(cfg, run_dir: Path, env, *, resume_step: int, wandb_id: str | None) -> Sinks:
    return Sinks(cfg, run_dir, enabled=env.is_main, resume_step=resume_step, wandb_id=wandb_id)


def format_summary_table(summary: dict[str, Any], run_dir: Path | None = None) -> str:
    rows = [("val top-1 (%)", "val/top1", "{:.2f}"), ("val top-5 (%)", "val/top5", "{:.2f}"),
            ("val loss", "val/loss", "{:.4f}"), ("train loss", "train/loss", "{:.4f}"),
            ("mean |w| (L1)", "train/l1_norm", "{:.5f}"), ("sign flips since init", "train/sign_flips_init",
                                                          "{:.2%}"),
            ("sparsity", "sparsity", "{:.2%}"), ("steps", "steps", "{}"), ("wall time (s)", "wall_time_s", "{:.1f}"),
            ("images/s", "train/images_per_s", "{:.0f}")]
    lines = []
    for label, key, fmt in rows:
        v = summary.get(key)
        if v is not None:
            lines.append((label, fmt.format(v)))
    width = max(len(a) for a, _ in lines)
    out = ["", "=" * (width + 16), *(f"{a:<{width}}  {b:>12}" for a, b in lines), "=" * (width + 16)]
    if run_dir is not None:
        out.append(f"run dir: {run_dir}")
    return "\n".join(out)
