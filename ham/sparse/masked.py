"""Common machinery of mask-based sparsifiers (random PaI, Ac/Dc, RiGL; Sign-In's mask sources).

Masks are bool tensors kept on the sparsifier (not module buffers, so the model's state_dict stays plain) and
saved in its state_dict. Pruned weights stay exactly zero through every optimizer:
  before_step: grads of pruned weights zeroed (momentum and weight decay then add nothing: the weight is 0);
  optimizer.step: HAM's step is multiplicative, zeros stay zero;
  after_step: every REAPPLY_EVERY steps the masks are re-applied to the weights, a cheap safety net (with
              grads masked and the state of pruned entries zeroed, SGD, AdamW, SAM and HAM all keep zeros at
              zero by themselves; the tests check that at every step without the net);
  mask changes: the optimizer state of newly pruned / regrown entries is zeroed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ham.sparse import masks as M
from ham.sparse.base import Sparsifier, TrainSchedule


class MaskedSparsifier(Sparsifier):
    name = "masked"
    REAPPLY_EVERY = 100

    def __init__(self, sparsity: float = 0.9, keep_first_dense: bool = False, keep_last_dense: bool = False):
        self.sparsity = float(sparsity)
        self.keep_first_dense, self.keep_last_dense = bool(keep_first_dense), bool(keep_last_dense)
        self.masks: dict[str, Tensor] = {}
        self.model = None
        self.optimizer = None

    # -- setup
    def setup(self, model: nn.Module, schedule: TrainSchedule) -> None:
        super().setup(model, schedule)
        self.layers = self.select_layers(model)

    def weights(self) -> dict[str, Tensor]:
        """The trainable tensors the masks act on (the original ones under a parametrization)."""
        return {n: M.weight_of(m) for n, m in self.layers.items()}

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(w.shape) for n, w in self.weights().items()}

    # -- mask operations
    @torch.no_grad()
    def set_masks(self, masks: dict[str, Tensor], *, reset_state_of_changed: bool = True) -> None:
        """Install new masks: broadcast from rank 0, zero pruned weights and the optimizer state that changed."""
        M.broadcast_masks_(masks)
        weights = self.weights()
        for n, m in masks.items():
            old = self.masks.get(n)
            if reset_state_of_changed and self.optimizer is not None:
                changed_or_pruned = ~m if old is None else (~m | (m & ~old))
                M.mask_optimizer_state_(self.optimizer, weights[n], ~changed_or_pruned)
            weights[n].masked_fill_(~m, 0)
        self.masks = masks

    def clear_masks(self) -> None:
        self.masks = {}

    def _pruned(self) -> dict[str, Tensor]:
        """~mask per layer, cached until the masks dict is replaced (every mask change installs a new dict):
        saves allocating the inverse on every step."""
        if getattr(self, "_pruned_for", None) is not self.masks:
            self._pruned_cache = {n: ~m for n, m in self.masks.items()}
            self._pruned_for = self.masks
        return self._pruned_cache

    def mask_gradients(self) -> None:
        if self.masks:
            weights = self.weights()
            for n, pruned in self._pruned().items():
                g = weights[n].grad
                if g is not None:
                    g.masked_fill_(pruned, 0)  # not a multiply: 0 * NaN is NaN

    def before_step(self, step: int) -> bool:
        self.mask_gradients()
        return True

    def after_step(self, step: int) -> None:
        if self.masks and step % self.REAPPLY_EVERY == 0:
            M.apply_masks_(self.masks, self.weights())

    # -- reporting and state
    def current_sparsity(self) -> float:
        total = sum(w.numel() for w in self.weights().values())
        kept = sum(int(m.sum()) for m in self.masks.values()) + sum(
            w.numel() for n, w in self.weights().items() if n not in self.masks)
        return 1.0 - kept / total

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {n: m.cpu() for n, m in self.masks.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = self.weights()
        self.masks = {n: m.to(weights[n].device).bool() for n, m in state.get("masks", {}).items()}
