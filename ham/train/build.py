"""A run built from its config: the only trainer code that reads the config.

    build_run(cfg, env) -> Run: the dataset's task (ham/tasks) -> its data -> model -> sparsifier.setup -> optimizer (HAM around base / SAM) ->
                               scheduler -> DDP / compile -> the step (ham/train/step.py), plus the loop's settings

The loop (ham/train/loop.py), the checkpoint state (ham/train/state.py) and the step see plain objects and values.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ham import registry
from ham.config import config_hash
from ham.provenance import provenance
from ham.data.datasets import DatasetInfo
from ham.models import build_model
from ham.optim.factory import StepSchedule, build_optimizer, build_scheduler
from ham.sparse.base import Sparsifier, TrainSchedule
from ham.sparse.options import source_defaults
from ham.sparse.registry import build_sparsifier
from ham.train.distributed import DDP_OPTIONS, DistEnv
from ham.train.step import TrainStep
from ham.tasks import task_for
from ham.train.threads import apply_threads

@dataclass(frozen=True)
class Settings:
    """What the loop and the checkpoints need from the config, as plain values."""

    epochs: int
    steps_per_epoch: int
    last_step: int  # trainer.max_steps, capped at the schedule's end
    per_rank_batch: int
    log_every_steps: int
    checkpoint_every_steps: int
    eval_every_epochs: int
    keep_checkpoints: int
    preempt_check_every: int
    progress_bar: bool | str
    resume: str  # auto | never | a checkpoint path
    wandb: dict[str, Any] | None
    config: dict[str, Any]  # the resolved config (W&B's record)
    config_hash: str
    provenance: dict[str, Any]  # commit, command, versions, threads: what produced this run (ham/provenance.py)


@dataclass
class Run:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: StepSchedule
    sparsifier: Sparsifier
    step: TrainStep
    train_loader: Any
    val_loader: Any
    data_info: DatasetInfo
    channels_last: bool
    settings: Settings
    task: Any = None  # ham/tasks: the data's task (evaluation, best-so-far metrics, checkpoint cadence)

    def to_device(self, images: Any, targets: torch.Tensor, device: torch.device):
        """A batch to the device: images (or the task's model input, e.g. a graph: anything with .to) and targets."""
        images = images.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, targets


def build_run(cfg: DictConfig, env: DistEnv) -> Run:
    t = cfg.trainer
    torch.manual_seed(cfg.seed)  # same init on every rank
    if env.device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark) and not t.deterministic
    if t.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    ds = cfg.dataset
    per_rank_batch = t.global_batch_size // env.world_size
    model_facts = registry.facts("model", cfg.model.name)
    channels_last = (t.channels_last is True or (t.channels_last == "auto" and env.device.type == "cuda"
                                                 and model_facts.get("channels_last", False)))
    eval_batch = t.eval_batch_size or per_rank_batch
    task = task_for(ds.name)  # the dataset's task (ham/tasks): its data, its evaluation
    train_loader, val_loader, data_info = task.data(cfg, env, per_rank_batch=per_rank_batch, eval_batch=eval_batch,
                                                    channels_last=channels_last)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ValueError(f"trainer.global_batch_size={t.global_batch_size} is larger than the training set "
                         f"({data_info.train_size} images)")
    total_steps = t.epochs * steps_per_epoch

    model = build_model(cfg.model.name, data_info.num_classes, in_chans=data_info.in_chans,
                        img_size=data_info.img_size, **OmegaConf.to_container(cfg.model.kwargs))
    threads_line = apply_threads(t.threads, model, env.world_size)
    if env.is_main:
        print(threads_line, file=sys.stderr, flush=True)
    model.to(env.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)

    sp_opts = {k: v for k, v in OmegaConf.to_container(cfg.sparsifier, resolve=True).items() if k != "name"}
    source = sp_opts.pop("source", None)
    if source is not None:  # Sign-In: its mask source with that source's config defaults, then `source`
        sp_opts = {**source_defaults(sp_opts["mask_source"]), **sp_opts, **source}
    sparsifier = build_sparsifier(cfg.sparsifier.name, **sp_opts)
    sparsifier.setup(model, TrainSchedule(epochs=t.epochs, steps_per_epoch=steps_per_epoch,
                                          global_batch_size=t.global_batch_size))

    # a model with the fact ham_only names the tensors HAM steps (model.ham_parameters(); GNNs: the convolutions)
    ham_params = model.ham_parameters() if model_facts.get("ham_only") else None
    optimizer = build_optimizer(model, OmegaConf.to_container(cfg.optimizer, resolve=True),
                                OmegaConf.to_container(cfg.ham, resolve=True),
                                overrides=sparsifier.param_group_overrides(), no_decay_names=model_facts.get("no_decay_names", ()),
                                ham_params=ham_params)
    scheduler = build_scheduler(optimizer, OmegaConf.to_container(cfg.schedule, resolve=True),
                                total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    sparsifier.attach_optimizer(optimizer)

    forward = model
    if env.distributed:
        # DDP_OPTIONS: bucket-view grads, no per-forward buffer broadcast (BN stats are made rank 0's before
        # evaluation and at the end: ham/train/loop.py)
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None, **DDP_OPTIONS)
    if t.compile:
        forward = torch.compile(forward)
    amp_dtype = None
    if t.precision == "bf16" or (t.precision == "auto" and env.device.type == "cuda"):
        amp_dtype = torch.bfloat16
    mixup = None
    if t.mixup:
        # imported here only: nothing else on this path imports timm, and timm.data alone costs about half of
        # all the trainer's imports (measured); only the DeiT recipes use Mixup
        from timm.data import Mixup

        mixup = Mixup(**OmegaConf.to_container(t.mixup, resolve=True), label_smoothing=t.label_smoothing,
                      num_classes=data_info.num_classes)
    step = TrainStep(model, optimizer, scheduler, sparsifier, forward=forward, amp_dtype=amp_dtype, mixup=mixup,
                     label_smoothing=t.label_smoothing, grad_clip_norm=t.grad_clip_norm,
                     distributed=env.distributed)

    wandb = OmegaConf.select(cfg, "logger.wandb")
    settings = Settings(
        epochs=t.epochs, steps_per_epoch=steps_per_epoch, per_rank_batch=per_rank_batch,
        last_step=total_steps if t.max_steps is None else min(total_steps, t.max_steps),
        log_every_steps=t.log_every_steps, checkpoint_every_steps=t.checkpoint_every_steps,
        eval_every_epochs=t.eval_every_epochs, keep_checkpoints=t.keep_checkpoints,
        preempt_check_every=t.preempt_check_every, progress_bar=t.progress_bar, resume=str(cfg.resume),
        wandb=None if wandb is None else OmegaConf.to_container(wandb, resolve=True),
        config=OmegaConf.to_container(cfg, resolve=True), config_hash=config_hash(cfg),
        provenance=provenance(threads=torch.get_num_threads()))
    return Run(model=model, optimizer=optimizer, scheduler=scheduler, sparsifier=sparsifier, step=step,
               train_loader=train_loader, val_loader=val_loader, data_info=data_info, channels_last=channels_last,
               settings=settings, task=task)
