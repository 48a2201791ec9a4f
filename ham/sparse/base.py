"""The sparsifier plugin interface: the trainer calls only these hooks (no per-method branches in the loop).

Order in the trainer (ham/train/loop.py):

    model = build_model(...)
    sparsifier.setup(model, schedule)            # before the optimizer: may register parametrizations
    groups = param groups built from model.named_parameters(), then
             sparsifier.param_group_overrides() moved into their own groups (e.g. ham=False, weight_decay=0)
    optimizer = HAM(base(groups)) ; scheduler
    sparsifier.attach_optimizer(optimizer)       # to reset/zero optimizer state of pruned or regrown weights
    for epoch: sparsifier.on_epoch_start(epoch)  # phase changes (Ac/Dc), Sign-In resets
        for step: forward/backward
                  do_step = sparsifier.before_step(step)   # may read dense grads; masks grads of pruned weights
                  if do_step: optimizer.step()             # base step + hyperbolic step
                  sparsifier.after_step(step)              # re-apply masks, mask updates (RiGL)
    model_final.pt = sparsifier.export_state_dict(model)   # effective weights, parametrizations folded

`step` is the global optimizer step counter (0-based, counts skipped steps too); `epoch` is 0-based.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class TrainSchedule:
    """What a sparsifier may know about the run's length (and its global batch; 0 = not given)."""

    epochs: int
    steps_per_epoch: int
    global_batch_size: int = 0

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def sparse_update(sparsifier: "Sparsifier", optimizer: torch.optim.Optimizer, step: int,
                  before_skip: Callable[[], None] | None = None) -> bool:
    """One update in the hook order every loop uses (the trainer and the tests call this; it is stated only
    here): the sparsifier sees the all-reduced gradients first (masks them; RigL may update its masks and skip
    the update), then the optimizer steps (base step, then the hyperbolic step), then the sparsifier re-applies
    its masks and advances its schedule. `before_skip` runs first when the sparsifier will skip this update:
    SAM must put the weights back from its ascent point BEFORE a mask update edits them (restoring after it
    would bring dropped weights back). Returns whether the optimizer stepped."""
    if before_skip is not None and sparsifier.skips_update(step):
        before_skip()
    stepped = sparsifier.before_step(step)
    if stepped:
        optimizer.step()
    sparsifier.after_step(step)
    return stepped


class Sparsifier:
    """The hooks the trainer calls, each a no-op here. Subclasses override what they need."""

    name = "base"
    sparsity = 0.0

    def __init__(self, sparsity: float = 0.0):
        self.sparsity = float(sparsity)
        self.model = None
        self.optimizer = None

    def setup(self, model: nn.Module, schedule: TrainSchedule) -> None:
        self.model = model
        self.schedule = schedule

    def select_layers(self, model: nn.Module) -> dict[str, nn.Module]:
        """{name: module} of the prunable conv/linear layers, honouring keep_first_dense / keep_last_dense."""
        from ham.sparse.masks import prunable_layers

        layers = dict(prunable_layers(model, keep_first_dense=getattr(self, "keep_first_dense", False),
                                      keep_last_dense=getattr(self, "keep_last_dense", False)))
        if not layers:
            raise ValueError("the model has no prunable (conv/linear) layers")
        return layers

    def param_group_overrides(self) -> list[dict[str, Any]]:
        """Param groups the trainer must build as given (e.g. STR thresholds: {'params': [...], 'ham': False,
        'weight_decay': ...}); those params are removed from the default groups."""
        return []

    def attach_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer

    def on_epoch_start(self, epoch: int) -> None:
        pass

    def mask_gradients(self) -> None:
        """Zero the gradients of pruned weights (also called before SAM's ascent step)."""

    def skips_update(self, step: int) -> bool:
        """Whether before_step(step) will return False (e.g. a RigL mask-update step)."""
        return False

    def before_step(self, step: int) -> bool:
        """Called after backward (grads are all-reduced). Return False to skip the optimizer update."""
        return True

    def after_step(self, step: int) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def tracked_weights(self, managed: list[torch.Tensor]) -> list[torch.Tensor]:
        """The effective weights the metrics (sign flips, L1) follow: what the model computes with. `managed` is
        the optimizer's HAM-managed tensors; reparameterising sparsifiers replace their layers' trainable
        originals by the effective `module.weight` (masked W is already effective: the default keeps it)."""
        return managed

    def changes_model_at_end(self) -> bool:
        """Whether on_train_end will change the model (the trainer then also reports the model before it)."""
        return False

    def on_train_end(self) -> bool:
        """Last word before the final evaluation and export (STR projects to its exact target). Returns True
        if it changed the model, so the trainer evaluates again."""
        return False

    def report(self) -> dict[str, Any] | None:
        """Extra facts for summary.json["sparsifier"] (schedule used, events, layer densities), or None."""
        return None

    def export_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Plain state_dict of the EFFECTIVE weights (masks applied, parametrizations folded)."""
        from ham.sparse.masks import effective_state_dict

        return effective_state_dict(model)


class Dense(Sparsifier):
    """No sparsity: the hooks are all no-ops."""

    name = "dense"

    def __init__(self, sparsity: float = 0.0):
        if sparsity != 0:
            raise ValueError(f"sparsity={sparsity!r}: the dense sparsifier has sparsity 0; choose a sparse method "
                             f"(random, acdc, rigl, str, signin)")
        super().__init__(0.0)
