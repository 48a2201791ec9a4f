"""The one training loop for every recipe (dense, SAM, every sparsifier), single process or DDP.

    build: data -> model -> sparsifier.setup -> optimizer (HAM around base / SAM) -> scheduler -> resume
    each step: forward/backward (SAM: two passes) -> sparsifier.before_step -> optimizer.step ->
               sparsifier.after_step -> scheduler.step; metrics at log steps; checkpoints; eval per epochs
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ham.errors import NonFiniteLoss, Preempted
from ham.sparse.base import sparse_update
from ham.train.distributed import DDP_OPTIONS, AsyncAgreement, DistEnv
from ham.train.io import atomic_torch_save, atomic_write_text
from ham.train.preempt import submitit_signal
from ham.train.threads import apply_threads, choose_workers


class Trainer:
    def __init__(self, cfg: DictConfig, run_dir: Path, env: DistEnv):
        self.cfg, self.run_dir, self.env = cfg, Path(run_dir), env
        self.ckpt_dir = self.run_dir / "checkpoints"
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        from ham.data import build_datasets, build_loader
        from ham.models import build_model
        from ham.optim.factory import build_optimizer, build_scheduler
        from ham.sparse.base import TrainSchedule
        from ham.sparse.registry import build_sparsifier

        cfg, env, t = self.cfg, self.env, self.cfg.trainer
        torch.manual_seed(cfg.seed)  # same init on every rank
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(t.cudnn_benchmark) and not t.deterministic
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)

        ds = cfg.dataset
        self.per_rank_batch = t.global_batch_size // env.world_size
        self.channels_last = (t.channels_last is True or (t.channels_last == "auto" and env.device.type == "cuda"
                                                          and cfg.model.name.startswith("resnet")))
        if ds.loader == "ffcv":  # data_dir's .beton files; uint8 to the device, normalised there
            from ham.data.ffcv_loader import build_ffcv_loaders

            self.train_loader, self.val_loader, self.data_info = build_ffcv_loaders(
                cfg, env, per_rank_batch=self.per_rank_batch, eval_batch=t.eval_batch_size or self.per_rank_batch,
                channels_last=self.channels_last)
        else:
            train_ds, val_ds, self.data_info = build_datasets(
                ds.name, cfg.data_dir, img_size=ds.img_size, augment=ds.augment, download=ds.download,
                smoke_images=ds.smoke_images, **OmegaConf.to_container(ds.options, resolve=True))
            common = dict(seed=cfg.seed, rank=env.rank, world_size=env.world_size,
                          num_workers=choose_workers(t.num_workers, env.world_size),
                          pin_memory=env.device.type == "cuda", backend=ds.loader)
            self.train_loader = build_loader(train_ds, batch_size=self.per_rank_batch, train=True, drop_last=True,
                                             **common)
            self.val_loader = build_loader(val_ds, batch_size=t.eval_batch_size or self.per_rank_batch,
                                           train=False, drop_last=False, **common)
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise ValueError(f"trainer.global_batch_size={t.global_batch_size} is larger than the training set "
                             f"({self.data_info.train_size} images)")
        self.total_steps = t.epochs * self.steps_per_epoch

        model = build_model(cfg.model.name, self.data_info.num_classes, in_chans=self.data_info.in_chans,
                            img_size=self.data_info.img_size, **OmegaConf.to_container(cfg.model.kwargs))
        threads_line = apply_threads(t.threads, model, env.world_size)
        if env.is_main:
            print(threads_line, file=sys.stderr, flush=True)
        model.to(env.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        self.model = model

        sp_opts = {k: v for k, v in OmegaConf.to_container(cfg.sparsifier, resolve=True).items() if k != "name"}
        source = sp_opts.pop("source", None)
        if source is not None:  # Sign-In: its mask source with that source's config defaults, then `source`
            from ham.schema import source_defaults

            sp_opts = {**source_defaults(sp_opts["mask_source"]), **sp_opts, **source}
        self.sparsifier = build_sparsifier(cfg.sparsifier.name, **sp_opts)
        self.sparsifier.setup(model, TrainSchedule(epochs=t.epochs, steps_per_epoch=self.steps_per_epoch,
                                                         global_batch_size=t.global_batch_size))

        opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
        self.optimizer = build_optimizer(model, opt_cfg, OmegaConf.to_container(cfg.ham, resolve=True),
                                         overrides=self.sparsifier.param_group_overrides(),
                                         no_decay_names=("pos_embed", "cls_token", "dist_token"))
        self.scheduler = build_scheduler(self.optimizer, OmegaConf.to_container(cfg.schedule, resolve=True),
                                         total_steps=self.total_steps, steps_per_epoch=self.steps_per_epoch)
        self.sparsifier.attach_optimizer(self.optimizer)

        from ham.optim.sam import sam_of

        self.sam = sam_of(self.optimizer)
        self.ddp_model = model
        if env.distributed:
            # DDP_OPTIONS: bucket-view grads, no per-forward buffer broadcast (BN stats are made rank 0's before
            # evaluation and at the end: _sync_buffers, _finish)
            self.ddp_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[env.device.index] if env.device.type == "cuda" else None, **DDP_OPTIONS)
        if t.compile:
            self.ddp_model = torch.compile(self.ddp_model)

        self.amp_dtype = None
        if t.precision == "bf16" or (t.precision == "auto" and env.device.type == "cuda"):
            self.amp_dtype = torch.bfloat16
        self.mixup = self._build_mixup()

        from ham.train.metrics import SignTracker

        # metrics follow the effective weights (masked W, STR's thresholded W, theta = m * w)
        managed = self.optimizer.managed_params()
        self.tracked = lambda: self.sparsifier.tracked_weights(managed)
        self.sign_tracker = SignTracker(self.tracked)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: dict[str, Any] = {}
        self.wandb_id: str | None = None

    def _build_mixup(self):
        mix = OmegaConf.select(self.cfg, "trainer.mixup")
        if not mix:
            return None
        from timm.data import Mixup

        return Mixup(**OmegaConf.to_container(mix, resolve=True), label_smoothing=self.cfg.trainer.label_smoothing,
                     num_classes=self.data_info.num_classes)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        from ham.train.checkpoint import capture_rng_state

        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sparsifier": self.sparsifier.state_dict(),
            "sign_tracker": self.sign_tracker.state_dict(),
            "rng": capture_rng_state(),
            "progress": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
            "history": {**self.history, "wall_time_s": self._wall_time()},
            "wandb_id": self.wandb_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from ham.train.checkpoint import restore_rng_state

        config_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._apply_config_hparams(config_groups)
        self.sparsifier.load_state_dict(state["sparsifier"])
        self.sign_tracker.load_state_dict(state["sign_tracker"])
        p = state["progress"]
        self.step, self.epoch, self.batch_in_epoch = int(p["step"]), int(p["epoch"]), int(p["batch_in_epoch"])
        self.history = dict(state.get("history") or {})
        self.wandb_id = state.get("wandb_id")
        rng = state["rng"]
        if isinstance(rng, list):  # saved by a DDP run: one entry per rank
            rng = rng[self.env.rank] if len(rng) == self.env.world_size else rng[0]
        restore_rng_state(rng)

    def _apply_config_hparams(self, config_groups: list[dict[str, Any]]) -> None:
        """After a resume the config wins over the checkpoint's param groups (ham_alpha, weight_decay, momentum,
        peak lr, ...); only the schedule's position comes from the checkpoint."""
        sched = self.scheduler
        for i, (group, fresh) in enumerate(zip(self.optimizer.param_groups, config_groups)):
            group.update({k: v for k, v in fresh.items() if k != "lr"})
            sched.base_lrs[i] = fresh["initial_lr"]
            group["lr"] = fresh["initial_lr"] * sched.lr_lambdas[i](sched.last_epoch)
        sched._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def save_checkpoint(self) -> None:
        self._check_finite(weights=True)  # never replace a good checkpoint with NaN/inf weights
        from ham.train.checkpoint import capture_rng_state

        rng = capture_rng_state()
        if self.env.distributed:  # every rank's own streams (dropout, drop-path), so a resume is exact per rank
            import torch.distributed as dist

            per_rank = [None] * self.env.world_size
            dist.all_gather_object(per_rank, {k: _to_cpu(v) for k, v in rng.items()})
            rng = per_rank
        if self.env.is_main:
            from ham.train.checkpoint import save_checkpoint

            state = self.state_dict()
            state["rng"] = rng
            save_checkpoint(state, self.ckpt_dir, self.step, keep=self.cfg.trainer.keep_checkpoints)

    def maybe_resume(self) -> bool:
        """resume=auto: the newest checkpoint that loads AND fits this run (model keys and shapes, optimizer,
        sparsifier state); one that does not is skipped with a warning (fall back to the next older). None
        fits: ConfigError (exit 2) listing the files and the choices. resume=PATH must fit, else ConfigError."""
        from ham.train.checkpoint import list_checkpoints, load_checkpoint_file

        resume = self.cfg.resume
        if resume == "never":
            return False
        if resume != "auto":
            path = Path(resume)
            try:
                self._load_fitting(load_checkpoint_file(path, map_location=self.env.device))
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001
                from ham.errors import ConfigError

                raise ConfigError(f"resume={resume} cannot be used for this run ({_reason(e)}); allowed: auto, "
                                  f"never, or a checkpoint written by train.py with the same model, dataset and "
                                  f"sparsifier") from None
            self._print(f"resumed from {path} (step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch})")
            return True
        candidates = list_checkpoints(self.ckpt_dir)[::-1]
        if not candidates:
            return False
        for i, path in enumerate(candidates):
            try:
                self._load_fitting(load_checkpoint_file(path, map_location=self.env.device))
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001 -- corrupt, wrong model, missing keys: all mean "unusable"
                nxt = candidates[i + 1].name if i + 1 < len(candidates) else "nothing"
                self._print(f"warning: checkpoint {path.name} is unusable (corrupt or not this run's: "
                            f"{_reason(e)}); falling back to {nxt}")
                continue
            self._print(f"resumed from {path} (step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch})")
            return True
        from ham.errors import ConfigError

        names = ", ".join(p.name for p in candidates)
        raise ConfigError(f"no checkpoint in {self.ckpt_dir} fits this run ({names}: corrupt or from another "
                          f"model/sparsifier); move them away to start over, pass resume=PATH (a good checkpoint), "
                          f"or use resume=never with a new hydra.run.dir")

    def _load_fitting(self, state: dict[str, Any]) -> None:
        """load_state_dict, all or nothing: checked against this run's structure first, and if loading still
        fails part-way, the state before the attempt is put back."""
        import copy

        missing = [k for k in ("model", "optimizer", "scheduler", "sparsifier", "progress", "rng") if k not in state]
        if missing:
            raise KeyError(f"missing {', '.join(missing)}")
        mine = self.model.state_dict()
        theirs = state["model"]
        if not isinstance(theirs, dict) or set(theirs) != set(mine):
            diff = sorted(set(mine) ^ set(theirs if isinstance(theirs, dict) else {}))
            raise ValueError(f"model keys differ ({len(diff)} keys, e.g. {', '.join(diff[:3])})")
        bad = [k for k, v in mine.items() if getattr(theirs[k], "shape", None) != v.shape]
        if bad:
            raise ValueError(f"model shapes differ ({', '.join(bad[:3])})")
        groups = state["optimizer"].get("param_groups", [])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.optimizer.param_groups]:
            raise ValueError("optimizer parameter groups differ")
        if not isinstance(state["sparsifier"], dict) or set(state["sparsifier"]) != set(self.sparsifier.state_dict()):
            raise ValueError("sparsifier state differs")
        before = copy.deepcopy(self.state_dict())
        try:
            self.load_state_dict(state)
        except BaseException:
            self.load_state_dict(before)
            raise

    def _check_storage(self) -> None:
        """Before the first step: room for the next checkpoint (its temp file exists beside the old ones) and
        model_final.pt, with a 25 % margin; else one line now rather than a failed save an interval later."""
        if not self.env.is_main:
            return
        import shutil

        from ham.errors import StorageError
        from ham.train.checkpoint import list_checkpoints
        from ham.train.io import _storage_error

        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise (_storage_error(self.ckpt_dir, e) or e) from None
        ckpts = list_checkpoints(self.ckpt_dir)
        model_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        need = ckpts[-1].stat().st_size if ckpts else 3 * model_bytes  # weights + optimizer state
        need = int(1.25 * (need + model_bytes))
        free = shutil.disk_usage(self.ckpt_dir).free
        if free < need:
            raise StorageError(f"cannot write {self.ckpt_dir}: only {free / 2**20:.1f} MiB free, a checkpoint "
                               f"needs about {need / 2**20:.1f} MiB (with margin); free space there or choose "
                               f"another hydra.run.dir, then rerun the same command")

    # ------------------------------------------------------------------ signals
    def _install_signal_handlers(self) -> None:
        def handler(signum, _frame):
            self._stop_signal = signum

        signals = [signal.SIGTERM, signal.SIGUSR1]
        submitit_sig = submitit_signal()
        if submitit_sig is not None:  # Hydra's submitit launcher: its pre-timeout signal (USR2) checkpoints too
            signals.append(submitit_sig)
        for sig in signals:
            with contextlib.suppress(ValueError):  # not in the main thread
                previous = signal.signal(sig, handler)
                if sig == submitit_sig:  # submitit's requeue handler: called after the checkpoint (ham.cli)
                    from ham.train import stop

                    self.submitit_handler = stop.original_handler(sig) if previous is stop._handler else previous

    def _should_stop(self) -> bool:
        if not self.env.distributed:
            return self._stop_signal is not None
        if self.step % self.cfg.trainer.preempt_check_every:
            return False
        # asynchronous: answers the agreement started one interval ago (no device drain), starts the next one
        if getattr(self, "_stop_agreement", None) is None:
            self._stop_agreement = AsyncAgreement(self.env.device)
        return self._stop_agreement.poll(self._stop_signal is not None)

    # ------------------------------------------------------------------ step
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.env.device.type, dtype=self.amp_dtype)

    def _loss(self, images, targets) -> torch.Tensor:
        with self._autocast():
            logits = self.ddp_model(images)
            if targets.ndim == 2:  # mixup/cutmix soft targets
                return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
            return F.cross_entropy(logits.float(), targets, label_smoothing=self.cfg.trainer.label_smoothing)

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.mixup is not None:
            images, targets = self.mixup(images, targets)
        if self.sam is not None:
            # SAM: ascent step from this rank's own gradient (no all-reduce: DDP no_sync covers the forward),
            # then the real gradient at the perturbed point with BN running stats frozen.
            no_sync = self.ddp_model.no_sync() if self.env.distributed else contextlib.nullcontext()
            with no_sync:
                self._loss(images, targets).backward()
            self.sparsifier.mask_gradients()  # pruned weights must not be perturbed either
            self.sam.first_step()
            self.optimizer.zero_grad(set_to_none=True)
            from ham.optim.sam import bn_stats_frozen

            with bn_stats_frozen(self.model):
                loss = self._loss(images, targets)
                loss.backward()
        else:
            loss = self._loss(images, targets)
            loss.backward()
        if self.cfg.trainer.grad_clip_norm:
            self.sparsifier.mask_gradients()  # the clipping norm must not count pruned weights' gradients
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.trainer.grad_clip_norm)
        # base (or SAM second) step, then the hyperbolic step; a skipped update (a RiGL mask update) undoes SAM's
        # ascent step
        sparse_update(self.sparsifier, self.optimizer, self.step,
                      before_skip=self.sam.restore if self.sam is not None else None)
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    # ------------------------------------------------------------------ metrics
    def _check_finite(self, weights: bool = False) -> None:
        bad = self._bad
        if weights:  # a step can blow up the weights while the loss that produced it was still finite
            tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
            bad = bad | ~torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if self.env.distributed:  # every rank must take the same branch
            import torch.distributed as dist

            bad = bad.to(torch.int32)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bool(bad.item()):
            from ham.train.checkpoint import list_checkpoints

            what = "loss or weights" if weights else "loss"
            ckpts = list_checkpoints(self.ckpt_dir)
            kept = (f"the last good checkpoint {ckpts[-1]} is intact" if ckpts else
                    f"no checkpoint was written yet ({self.ckpt_dir} is empty)")
            raise NonFiniteLoss(f"training {what} became NaN/inf by step {self.step}; stopping; {kept} (try a "
                                f"lower optimizer.lr or ham.alpha)")

    def _log_metrics(self) -> dict[str, Any]:
        from ham.train.metrics import l1_norm

        self._check_finite()
        n = max(1, self._loss_count)
        loss = float((self._loss_sum / n).item())
        elapsed = max(1e-9, time.perf_counter() - self._interval_start)
        imgs = self._interval_images * self.env.world_size / elapsed
        row = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "train/loss": loss,
               "lr": self.optimizer.param_groups[0]["lr"], "train/images_per_s": imgs,
               "train/l1_norm": l1_norm(self.tracked())}
        row.update(self.sign_tracker.update())
        row["sparsity"] = self._sparsity()["global"]
        self._reset_interval()
        return row

    def _sparsity(self) -> dict[str, Any]:
        from ham.sparse.masks import sparsity_report

        return sparsity_report(self.model)

    def _reset_interval(self) -> None:
        self._loss_sum = torch.zeros((), device=self.env.device)
        self._loss_count = 0
        self._interval_images = 0
        self._interval_start = time.perf_counter()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        from ham.train.evaluate import evaluate

        self._sync_buffers()
        self.model.eval()
        try:
            return evaluate(self.model, self.val_loader, self.env.device, autocast=self._autocast,
                            channels_last=self.channels_last,
                            flip=getattr(self.val_loader, "test_time_flip", False))
        finally:
            self.model.train()

    def _sync_buffers(self) -> None:
        """DDP runs with broadcast_buffers=False: make every rank's BN running stats rank 0's (before eval)."""
        if self.env.distributed:
            import torch.distributed as dist

            for b in self.model.buffers():
                dist.broadcast(b, src=0)

    # ------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        from ham.train.sinks import ProgressBar, make_sinks

        cfg, t = self.cfg, self.cfg.trainer
        self.build()
        self.maybe_resume()
        self._check_storage()
        wandb = OmegaConf.select(cfg, "logger.wandb")
        self.sinks = make_sinks(self.run_dir, is_main=self.env.is_main, resume_step=self.step,
                                wandb=None if wandb is None else OmegaConf.to_container(wandb, resolve=True),
                                config=OmegaConf.to_container(cfg, resolve=True), wandb_resume_id=self.wandb_id)
        self.wandb_id = self.sinks.wandb_id or self.wandb_id
        self._print(f"training on {self.env.world_size} process(es), device {self.env.device}, per-rank batch "
                    f"{self.per_rank_batch}, {self.steps_per_epoch} steps per epoch")
        self._install_signal_handlers()
        self._bad = torch.zeros((), dtype=torch.bool, device=self.env.device)
        self._reset_interval()
        last_step = self.total_steps if t.max_steps is None else min(self.total_steps, t.max_steps)
        setting = t.progress_bar
        bar = ProgressBar(total=last_step, initial=self.step, enabled=self.env.is_main and setting is not False,
                          tty=None if setting == "auto" else bool(setting))
        self._wall_prior = float(self.history.get("wall_time_s", 0.0))  # training time before a resume
        self._wall0 = time.perf_counter()
        self.model.train()
        try:
            while self.step < last_step:
                self._run_epoch(last_step, bar)
        finally:
            bar.close()
        return self._finish(self._wall_time())

    def _run_epoch(self, last_step: int, bar) -> None:
        t = self.cfg.trainer
        if self.batch_in_epoch == 0:
            self.sparsifier.on_epoch_start(self.epoch)
        self.train_loader.set_epoch(self.epoch)
        self.train_loader.set_start_batch(self.batch_in_epoch)
        for images, targets in self.train_loader:
            images = images.to(self.env.device, non_blocking=True)
            targets = targets.to(self.env.device, non_blocking=True)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss = self.train_step(images, targets)
            self._loss_sum += loss
            self._bad |= ~torch.isfinite(loss)
            self._loss_count += 1
            self._interval_images += images.shape[0]
            self.step += 1
            self.batch_in_epoch += 1
            bar.update(1)
            if self.step % t.log_every_steps == 0 or self.step == last_step:
                row = self._log_metrics()
                row["epoch"] = self.epoch + self.batch_in_epoch / self.steps_per_epoch
                self.sinks.log(row, step=self.step)
                self.history["last_logged"] = row  # checkpointed: a resumed run's summary still has them
                bar.set_postfix({"loss": f"{row['train/loss']:.4f}", "lr": f"{row['lr']:.3g}"})
            if self._should_stop():
                self.save_checkpoint()
                raise Preempted(f"stop signal received; checkpoint saved at step {self.step}",
                                signum=self._stop_signal, requeue=getattr(self, "submitit_handler", None))
            if self.step >= last_step:
                break
            if self.step % t.checkpoint_every_steps == 0 and self.batch_in_epoch < self.steps_per_epoch:
                self.save_checkpoint()
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
            if self.epoch % t.eval_every_epochs == 0 or self.epoch == t.epochs:
                self._eval_and_log()
            self.save_checkpoint()

    def _eval_and_log(self) -> dict[str, float]:
        val = self.evaluate()
        row = {"step": self.step, "epoch": float(self.epoch), **val}
        self.history["last_eval"] = {"step": self.step, **val}
        self.sinks.log(row, step=self.step)
        return val

    def _finish(self, wall: float) -> dict[str, Any]:
        if self.env.distributed:  # BN running stats drift per rank after the last forward: take rank 0's
            import torch.distributed as dist

            for b in self.model.buffers():
                dist.broadcast(b, src=0)
        # the sparsifier's last word first (STR projects to the exact target), so the final evaluation, the
        # summary and model_final.pt all describe the same model
        last = self.history.get("last_eval", {})
        evaluated = {k: v for k, v in last.items() if k != "step"} if last.get("step") == self.step else None
        before = None
        if self.sparsifier.changes_model_at_end():  # e.g. STR's projection: report the model before it too
            before = {**(evaluated or self.evaluate()), "sparsity": self._sparsity()["global"]}
        changed = self.sparsifier.on_train_end()
        if evaluated is not None and not changed:  # the epoch boundary just evaluated this model
            val = evaluated
        else:
            val = self._eval_and_log()
        self.save_checkpoint()
        report = self._sparsity()
        summary: dict[str, Any] = {
            "steps": self.step, "epochs": self.step / self.steps_per_epoch, "wall_time_s": wall,
            **{k: v for k, v in val.items()},
            "train/loss": self._last_logged("train/loss"), "train/l1_norm": self._last_logged("train/l1_norm"),
            "train/sign_flips_init": self._last_logged("train/sign_flips_init"),
            "train/images_per_s": self._last_logged("train/images_per_s"),
            "sparsity": report["global"], "sparsity_per_layer": report["layers"],
            "config_hash": self._config_hash(),
        }
        extra = self.sparsifier.report()
        if extra is not None:
            summary["sparsifier"] = extra
        if before is not None:
            summary["before_train_end"] = before  # metrics of the model before the sparsifier's last word
        if self.env.is_main:
            exported = self.sparsifier.export_state_dict(self.model)
            atomic_torch_save(exported, self.run_dir / "model_final.pt")
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2, default=float))
            self._plots(summary)
            self.sinks.summary(summary)
            self.sinks.finish()
        return summary

    def _plots(self, summary: dict[str, Any]) -> None:
        from ham.train.plots import plot_curves, plot_layer_sparsity

        plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
        if summary.get("sparsity", 0) > 0:
            plot_layer_sparsity(summary["sparsity_per_layer"], self.run_dir / "layer_sparsity.png")

    def _last_logged(self, key: str):
        return self.sinks.last.get(key, self.history.get("last_logged", {}).get(key))

    def _wall_time(self) -> float:
        """Training wall time of the whole run, resumed parts included (0 before run() starts the clock)."""
        if not hasattr(self, "_wall0"):
            return float(self.history.get("wall_time_s", 0.0))
        return self._wall_prior + time.perf_counter() - self._wall0

    def _config_hash(self) -> str:
        from ham.config import config_hash

        return config_hash(self.cfg)

    def _print(self, msg: str) -> None:
        if self.env.is_main:
            print(msg, file=sys.stderr, flush=True)


def _reason(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:200]


def _to_cpu(v):
    if isinstance(v, torch.Tensor):
        return v.cpu()
    if isinstance(v, dict):
        return {k: _to_cpu(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_to_cpu(x) for x in v)
    return v

