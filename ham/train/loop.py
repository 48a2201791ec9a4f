"""The one training loop for every recipe (dense, SAM, every sparsifier), single process or DDP.

    run = build_run(cfg, env)            ham/train/build.py: data, model, sparsifier, optimizer, schedule, the step
    state = TrainState(run.step, ...)    ham/train/state.py: progress, checkpoints, resume
    each step: run.step(images, targets, k)   ham/train/step.py: forward/backward (SAM: two passes) ->
               sparsifier.before_step -> optimizer.step -> sparsifier.after_step -> scheduler.step
    metrics at log steps; checkpoints; evaluation every few epochs; at the end the sparsifier's last word,
    model_final.pt, summary.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from omegaconf import DictConfig

from ham.errors import Preempted
from ham.sparse.masks import sparsity_report
from ham.train.build import Run, build_run
from ham.train.distributed import AsyncAgreement, DistEnv
from ham.train.io import atomic_torch_save, atomic_write_text
from ham.train.metrics import l1_norm
from ham.train.plots import plot_curves, plot_layer_sparsity
from ham.train.sinks import MultiSink, ProgressBar, make_sinks
from ham.train.state import TrainState
from ham.lifecycle.stop import TrainingStop, signal_name


def train_from_config(cfg: DictConfig, run_dir: Path, env: DistEnv) -> dict[str, Any]:
    """Train the run `cfg` describes in `run_dir` (resuming from its checkpoints); returns summary.json's dict."""
    return fit(build_run(cfg, env), run_dir, env)


def fit(run: Run, run_dir: Path, env: DistEnv) -> dict[str, Any]:
    """Train a built run in `run_dir` (resuming from its checkpoints); returns summary.json's dict."""
    run_dir = Path(run_dir)
    s, model, sparsifier = run.settings, run.model, run.sparsifier
    state = TrainState(run.step, env, run_dir / "checkpoints", keep_checkpoints=s.keep_checkpoints)
    state.resume(s.resume)
    state.check_storage()
    p = state.progress
    sinks = make_sinks(run_dir, is_main=env.is_main, resume_step=p.step, wandb=s.wandb, config=s.config,
                       wandb_resume_id=state.wandb_id)
    state.wandb_id = sinks.wandb_id or state.wandb_id
    if env.is_main:
        print(f"training on {env.world_size} process(es), device {env.device}, per-rank batch {s.per_rank_batch}, "
              f"{s.steps_per_epoch} steps per epoch", file=sys.stderr, flush=True)
    stop = TrainingStop(AsyncAgreement(env.device).poll if env.distributed else None, s.preempt_check_every)
    stop.install()
    interval = Interval(env.device)
    bar = ProgressBar(total=s.last_step, initial=p.step, enabled=env.is_main and s.progress_bar is not False,
                      tty=None if s.progress_bar == "auto" else bool(s.progress_bar))
    state.start_clock()
    model.train()
    try:
        while p.step < s.last_step:
            if p.batch_in_epoch == 0:
                sparsifier.on_epoch_start(p.epoch)
            run.train_loader.set_epoch(p.epoch)
            run.train_loader.set_start_batch(p.batch_in_epoch)
            for images, targets in run.train_loader:
                images, targets = run.to_device(images, targets, env.device)
                loss = run.step(images, targets, p.step)
                interval.add(loss, targets.shape[0])
                state.loss_not_finite |= ~torch.isfinite(loss)
                p.step += 1
                p.batch_in_epoch += 1
                bar.update(1)
                if p.step % s.log_every_steps == 0 or p.step == s.last_step:
                    state.check_finite()
                    row = log_row(run, state, interval.take(env.world_size))
                    sinks.log(row, step=p.step)
                    state.history["last_logged"] = row  # checkpointed: a resumed run's summary still has them
                    bar.set_postfix({"loss": f"{row['train/loss']:.4f}", "lr": f"{row['lr']:.3g}"})
                if stop.requested(p.step):
                    state.save()
                    raise Preempted(f"stopped by {stop_words(stop.signum)}; checkpoint saved at step {p.step}",
                                    signum=stop.signum, requeue=stop.requeue)
                if p.step >= s.last_step:
                    break
                if p.step % s.checkpoint_every_steps == 0 and p.batch_in_epoch < s.steps_per_epoch:
                    state.save()
            if p.batch_in_epoch >= s.steps_per_epoch:  # an epoch ended
                p.epoch += 1
                p.batch_in_epoch = 0
                if p.epoch % s.eval_every_epochs == 0 or p.epoch == s.epochs:
                    evaluate_and_log(run, state, sinks, env)
                if run.task.save_every_epoch or p.step % s.checkpoint_every_steps == 0:
                    state.save()
    finally:
        bar.close()
    wall = state.wall_time()

    # the sparsifier's last word first (STR projects to the exact target), so the final evaluation, the summary
    # and model_final.pt all describe the same model
    sync_buffers(model, env)  # BN running stats drift per rank after the last forward: take rank 0's
    last = state.history.get("last_eval", {})
    evaluated = {k: v for k, v in last.items() if k != "step"} if last.get("step") == p.step else None
    before = None
    if sparsifier.changes_model_at_end():  # e.g. STR's projection: report the model before it too
        before = {**(evaluated or run_evaluation(run, env)), "sparsity": sparsity_report(model)["global"]}
    changed = sparsifier.on_train_end()
    if evaluated is not None and not changed:  # the epoch boundary just evaluated this model
        val = evaluated
    else:
        val = evaluate_and_log(run, state, sinks, env)
    state.save()
    report = sparsity_report(model)
    logged = {**state.history.get("last_logged", {}), **sinks.last}
    summary: dict[str, Any] = {
        "steps": p.step, "epochs": p.step / s.steps_per_epoch, "wall_time_s": wall, **val,
        **{k: logged.get(k) for k in ("train/loss", "train/l1_norm", "train/sign_flips_init",
                                      "train/images_per_s")},
        "sparsity": report["global"], "sparsity_per_layer": report["layers"], "config_hash": s.config_hash,
        "provenance": {**s.provenance, "device": str(env.device), "world_size": env.world_size},
    }
    extra = sparsifier.report()
    if extra is not None:
        summary["sparsifier"] = extra
    if before is not None:
        summary["before_train_end"] = before  # metrics of the model before the sparsifier's last word
    if env.is_main:
        atomic_torch_save(sparsifier.export_state_dict(model), run_dir / "model_final.pt")
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=float))
        plot_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
        if summary["sparsity"] > 0:
            plot_layer_sparsity(summary["sparsity_per_layer"], run_dir / "layer_sparsity.png")
        sinks.summary(summary)
        sinks.finish()
    return summary


def stop_words(signum: int | None) -> str:
    if signum is None:  # DDP: another rank received it
        return "a stop signal on another rank"
    name = signal_name(signum)
    return f"{name} (Ctrl-C)" if name == "SIGINT" else name


class Interval:
    """Loss and throughput since the last log step, summed on the device (no host sync per step)."""

    def __init__(self, device: torch.device):
        self.device = device
        self._start_next()

    def _start_next(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.count = 0
        self.images = 0
        self.start = time.perf_counter()

    def add(self, loss: torch.Tensor, images: int) -> None:
        self.loss_sum += loss
        self.count += 1
        self.images += images

    def take(self, world_size: int) -> tuple[float, float]:
        """(mean loss, images/s over all ranks) of this interval; the next one starts."""
        loss = float((self.loss_sum / max(1, self.count)).item())
        images_per_s = self.images * world_size / max(1e-9, time.perf_counter() - self.start)
        self._start_next()
        return loss, images_per_s


def log_row(run: Run, state: TrainState, interval: tuple[float, float]) -> dict[str, Any]:
    p, (loss, images_per_s) = state.progress, interval
    row = {"step": p.step, "epoch": p.epoch + p.batch_in_epoch / run.settings.steps_per_epoch, "train/loss": loss,
           "lr": run.optimizer.param_groups[0]["lr"], "train/images_per_s": images_per_s,
           "train/l1_norm": l1_norm(state.tracked())}
    row.update(state.sign_tracker.update())
    row["sparsity"] = sparsity_report(run.model)["global"]
    return row


def sync_buffers(model: torch.nn.Module, env: DistEnv) -> None:
    """DDP runs with broadcast_buffers=False: make every rank's BN running stats rank 0's."""
    if env.distributed:
        for b in model.buffers():
            dist.broadcast(b, src=0)


@torch.no_grad()
def run_evaluation(run: Run, env: DistEnv) -> dict[str, float]:
    sync_buffers(run.model, env)
    run.model.eval()
    try:
        return run.task.evaluate(run.model, run.val_loader, env.device, autocast=run.step.autocast,
                                 channels_last=run.channels_last)
    finally:
        run.model.train()


def evaluate_and_log(run: Run, state: TrainState, sinks: MultiSink, env: DistEnv) -> dict[str, float]:
    step = state.progress.step
    val = run.task.track_best(run_evaluation(run, env), state.history, step)
    state.history["last_eval"] = {"step": step, **val}
    sinks.log({"step": step, "epoch": float(state.progress.epoch), **val}, step=step)
    return val
