"""A run's progress and everything a checkpoint holds, with save and resume.

    TrainState(step, env, ckpt_dir): for the model, optimizer, scheduler and sparsifier a TrainStep holds: progress (step, epoch, batch in epoch), history (last logged/evaluated rows,
    wall time), W&B id, sign tracker, the loss-not-finite flag
      .state_dict() / .load_state_dict()      the whole training state (model, optimizer, scheduler, sparsifier,
                                              RNG streams of every rank, progress)
      .save()                                 atomic checkpoint (rank 0 writes; NaN/inf weights never replace a good one)
      .resume(setting)                        resume=auto|never|PATH: the newest checkpoint that fits this run
      .check_storage()                        room for the next checkpoint before the first step
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ham.errors import ConfigError, NonFiniteLoss, StorageError
from ham.optim.factory import StepSchedule
from ham.train.checkpoint import (
    CheckpointDamaged,
    capture_rng_state,
    digest_path,
    list_checkpoints,
    load_verified,
    restore_rng_state,
    save_checkpoint,
    verify_checkpoint,
)
from ham.train.distributed import DistEnv
from ham.train.io import storage_error
from ham.train.metrics import SignTracker
from ham.train.step import TrainStep


@dataclass
class Progress:
    step: int = 0  # optimizer steps taken (skipped RigL updates count)
    epoch: int = 0
    batch_in_epoch: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}

    def __str__(self) -> str:
        return f"step {self.step}, epoch {self.epoch}, batch {self.batch_in_epoch}"


class TrainState:
    def __init__(self, step: TrainStep, env: DistEnv, ckpt_dir: Path, keep_checkpoints: int = 2):
        self.model, self.optimizer, self.sparsifier = step.model, step.optimizer, step.sparsifier
        self.scheduler: StepSchedule = step.scheduler
        self.env, self.ckpt_dir, self.keep_checkpoints = env, Path(ckpt_dir), keep_checkpoints
        self.progress = Progress()
        self.history: dict[str, Any] = {}
        self.wandb_id: str | None = None
        # metrics follow the effective weights (masked W, STR's thresholded W, theta = m * w)
        managed = self.optimizer.managed_params()
        self.tracked = lambda: self.sparsifier.tracked_weights(managed)
        self.sign_tracker = SignTracker(self.tracked)
        self.loss_not_finite = torch.zeros((), dtype=torch.bool, device=env.device)  # any step's, so far
        self._wall_prior = 0.0
        self._wall_start: float | None = None

    # ------------------------------------------------------------------ wall time
    def start_clock(self) -> None:
        self._wall_prior = float(self.history.get("wall_time_s", 0.0))  # training time before a resume
        self._wall_start = time.perf_counter()

    def wall_time(self) -> float:
        """Training wall time of the whole run, resumed parts included (the checkpoint's before start_clock)."""
        if self._wall_start is None:
            return float(self.history.get("wall_time_s", 0.0))
        return self._wall_prior + time.perf_counter() - self._wall_start

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sparsifier": self.sparsifier.state_dict(),
            "sign_tracker": self.sign_tracker.state_dict(),
            "rng": capture_rng_state(),
            "progress": self.progress.as_dict(),
            "history": {**self.history, "wall_time_s": self.wall_time()},
            "wandb_id": self.wandb_id,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """After loading, the config wins over the checkpoint's param groups (ham_alpha, weight_decay, momentum,
        peak lr, ...); only the schedule's position comes from the checkpoint."""
        config_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        for group, fresh in zip(self.optimizer.param_groups, config_groups):
            group.update({k: v for k, v in fresh.items() if k != "lr"})
        self.scheduler.rebase([g["initial_lr"] for g in config_groups])
        self.sparsifier.load_state_dict(state["sparsifier"])
        self.sign_tracker.load_state_dict(state["sign_tracker"])
        p = state["progress"]
        self.progress.step, self.progress.epoch = int(p["step"]), int(p["epoch"])
        self.progress.batch_in_epoch = int(p["batch_in_epoch"])
        self.history = dict(state.get("history") or {})
        self.wandb_id = state.get("wandb_id")
        rng = state["rng"]
        if isinstance(rng, list):  # saved by a DDP run: one entry per rank
            rng = rng[self.env.rank] if len(rng) == self.env.world_size else rng[0]
        restore_rng_state(rng)

    # ------------------------------------------------------------------ save
    def check_finite(self, weights: bool = False) -> None:
        """NonFiniteLoss if any step's loss (or, with weights=True, a weight) is NaN/inf; same answer on every rank."""
        bad = self.loss_not_finite
        if weights:  # a step can blow up the weights while the loss that produced it was still finite
            tensors = [t for t in self.model.state_dict().values() if t.is_floating_point()]
            bad = bad | ~torch.stack([torch.isfinite(t).all() for t in tensors]).all()
        if self.env.distributed:  # every rank must take the same branch
            bad = bad.to(torch.int32)
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        if bool(bad.item()):
            what = "loss or weights" if weights else "loss"
            kept = self._newest_checkpoint_state()
            raise NonFiniteLoss(f"training {what} became NaN/inf by step {self.progress.step}; stopping; {kept} "
                                f"(try a lower optimizer.lr or ham.alpha)")

    def _newest_checkpoint_state(self) -> str:
        """What the NaN line says about the newest checkpoint: "intact" only once its digest was checked."""
        ckpts = list_checkpoints(self.ckpt_dir)
        if not ckpts:
            return f"no checkpoint was written yet ({self.ckpt_dir} is empty)"
        try:
            verified = verify_checkpoint(ckpts[-1])
        except (CheckpointDamaged, OSError) as e:
            return (f"the last checkpoint {ckpts[-1]} is damaged ({_reason(e)}): a rerun sets it aside and resumes "
                    f"from an older one")
        if verified:
            return f"the last good checkpoint {ckpts[-1]} is intact (sha256 verified)"
        return (f"the last checkpoint {ckpts[-1]} has no digest, so it could not be verified: if a rerun fails the "
                f"same way, move it aside (resume falls back to the next older one)")

    def save(self) -> None:
        self.check_finite(weights=True)  # never replace a good checkpoint with NaN/inf weights
        rng = capture_rng_state()
        if self.env.distributed:  # every rank's own streams (dropout, drop-path), so a resume is exact per rank
            per_rank = [None] * self.env.world_size
            dist.all_gather_object(per_rank, {k: _to_cpu(v) for k, v in rng.items()})
            rng = per_rank
        if self.env.is_main:
            state = self.state_dict()
            state["rng"] = rng
            save_checkpoint(state, self.ckpt_dir, self.progress.step, keep=self.keep_checkpoints)

    # ------------------------------------------------------------------ resume
    def resume(self, setting: str) -> bool:
        """resume=auto: the newest checkpoint that is intact (its sha256 digest matches: ham/train/checkpoint.py)
        AND fits this run (model keys and shapes, optimizer, sparsifier state). One that does not is set aside
        (renamed ckpt_N.pt.damaged / ckpt_N.pt.unfit by rank 0, never deleted) with one warning line naming it and
        the checkpoint used instead. None usable: ConfigError (exit 2) listing the files and the choices, nothing
        renamed. A checkpoint without a digest (older than digests) loads with a warning: unverified.
        resume=PATH must be intact and fit, else ConfigError."""
        if setting == "never":
            return False
        if setting != "auto":
            path = Path(setting)
            try:
                state, verified = load_verified(path, map_location=self.env.device)
                self._load_fitting(state)
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except CheckpointDamaged as e:
                raise ConfigError(f"resume={setting} is damaged ({e}); allowed: auto, never, or an intact "
                                  f"checkpoint written by train.py") from None
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"resume={setting} cannot be used for this run ({_reason(e)}); allowed: auto, "
                                  f"never, or a checkpoint written by train.py with the same model, dataset and "
                                  f"sparsifier") from None
            self._resumed(path, verified)
            return True
        candidates = list_checkpoints(self.ckpt_dir)[::-1]
        if not candidates:
            return False
        skipped: list[tuple[Path, str, str]] = []  # (file, damaged|unfit, reason)
        for path in candidates:
            try:
                state, verified = load_verified(path, map_location=self.env.device)
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except CheckpointDamaged as e:
                skipped.append((path, "damaged", str(e)))
                continue
            except Exception as e:  # noqa: BLE001 -- unreadable, truncated zip, bad pickle, refused global
                skipped.append((path, "damaged", _reason(e)))
                continue
            try:
                self._load_fitting(state)
            except (MemoryError, torch.OutOfMemoryError):
                raise
            except Exception as e:  # noqa: BLE001 -- wrong model, missing keys: intact but not this run's
                skipped.append((path, "unfit", _reason(e)))
                continue
            for bad, kind, reason in skipped:
                aside = self._set_aside(bad, kind)
                what = "damaged" if kind == "damaged" else "unusable (not this run's"
                where = f"set aside as {aside}" if aside else "left in place"
                self._print(f"warning: checkpoint {bad.name} is {what}: {reason}{')' if kind == 'unfit' else ''}; "
                            f"{where}; resuming from {path.name} instead")
            self._resumed(path, verified)
            return True
        names = "; ".join(f"{p.name}: {kind} ({reason})" for p, kind, reason in skipped)
        raise ConfigError(f"no usable checkpoint in {self.ckpt_dir} ({names}); move them away to start over, pass "
                          f"resume=PATH (an intact checkpoint), or use resume=never with a new hydra.run.dir")

    def _resumed(self, path: Path, verified: bool) -> None:
        if not verified:
            self._print(f"warning: checkpoint {path} has no digest ({digest_path(path).name}: written before "
                        f"digests existed, or removed); loaded unverified")
        self._print(f"resumed from {path} ({self.progress})")

    def _set_aside(self, path: Path, kind: str) -> Path | None:
        """Rename a checkpoint resume cannot use (rank 0) so that no later save deletes or overwrites it and no
        later resume tries it again; its digest goes with it. None if it could not be renamed."""
        aside = path.with_name(f"{path.name}.{kind}")
        if not self.env.is_main:
            return aside
        try:
            if aside.exists():  # an earlier one of the same name: keep both
                aside = path.with_name(f"{path.name}.{kind}-{int(time.time())}")
            path.rename(aside)
        except OSError:
            return None
        side = digest_path(path)
        if side.exists():
            with contextlib.suppress(OSError):
                side.rename(digest_path(aside))
        return aside

    def _load_fitting(self, state: dict[str, Any]) -> None:
        """load_state_dict, all or nothing: checked against this run's structure first, and if loading still
        fails part-way, the state before the attempt is put back."""
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

    def check_storage(self) -> None:
        """Before the first step: room for the next checkpoint (its temp file exists beside the old ones) and
        model_final.pt, with a 25 % margin; else one line now rather than a failed save an interval later."""
        if not self.env.is_main:
            return
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise (storage_error(self.ckpt_dir, e) or e) from None
        ckpts = list_checkpoints(self.ckpt_dir)
        model_bytes = sum(t.numel() * t.element_size() for t in self.model.state_dict().values())
        need = ckpts[-1].stat().st_size if ckpts else 3 * model_bytes  # weights + optimizer state
        need = int(1.25 * (need + model_bytes))
        free = shutil.disk_usage(self.ckpt_dir).free
        if free < need:
            raise StorageError(f"cannot write {self.ckpt_dir}: only {free / 2**20:.1f} MiB free, a checkpoint "
                               f"needs about {need / 2**20:.1f} MiB (with margin); free space there or choose "
                               f"another hydra.run.dir, then rerun the same command")

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
