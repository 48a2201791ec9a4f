"""RigL (Evci et al. 2020, google-research/rigl): dynamic sparse training with gradient-based regrowth.

- Initial masks: random, with ERK (default) or uniform layer densities and exact counts.
- Every `delta_t` steps (default 100) while step < t_end = `end_fraction` (0.75) x total steps: drop fraction
  a_t = a/2 (1 + cos(pi t / t_end)) with a = `drop_fraction` (0.3). Per layer: drop the floor(a_t * active)
  active weights of smallest magnitude, then grow as many with the largest DENSE gradient magnitude among the
  weights that are not active after the drop (so a just-dropped weight may be regrown, as in the reference,
  which scores every non-kept connection by its gradient).
- Grown weights start at zero, with zeroed optimizer state; the optimizer update is SKIPPED on mask-update steps
  (the reference runs the mask update instead of apply_gradients on those steps).
- The dense gradient is free: masks zero the weights, not the graph, so p.grad is dense; it is read in
  before_step on update steps only (after DDP's all-reduce, so every rank computes the same masks).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ham.sparse import masks as M
from ham.sparse.masked import MaskedSparsifier
from ham.sparse.random_pai import random_masks


def drop_fraction_at(step: int, *, drop_fraction: float, t_end: int) -> float:
    return drop_fraction / 2 * (1 + math.cos(math.pi * step / t_end))


class RigL(MaskedSparsifier):
    name = "rigl"

    def __init__(self, sparsity: float = 0.9, distribution: str = "erk", delta_t: int = 100,
                 drop_fraction: float = 0.3, end_fraction: float = 0.75, seed: int = 0,
                 keep_first_dense: bool = False, keep_last_dense: bool = False):
        super().__init__(sparsity, keep_first_dense, keep_last_dense)
        if delta_t < 1 or not 0 < drop_fraction <= 1 or not 0 < end_fraction <= 1:
            raise ValueError("rigl needs delta_t >= 1, 0 < drop_fraction <= 1, 0 < end_fraction <= 1")
        self.distribution, self.delta_t, self.drop_fraction = distribution, int(delta_t), float(drop_fraction)
        self.end_fraction, self.seed = float(end_fraction), int(seed)
        self.updates: list[dict[str, Any]] = []  # per update: step, a_t, dropped/grown counts (tests, logs)

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        self.t_end = int(self.end_fraction * schedule.total_steps)
        device = next(iter(self.weights().values())).device
        self.set_masks(random_masks(self.shapes(), self.sparsity, self.distribution, self.seed, device))

    def is_update_step(self, step: int) -> bool:
        return step > 0 and step % self.delta_t == 0 and step < self.t_end

    def before_step(self, step: int) -> bool:
        if not self.is_update_step(step):
            self.mask_gradients()
            return True
        self.update_masks(step)
        self.mask_gradients()
        return False  # the reference skips the optimizer on mask-update steps

    @torch.no_grad()
    def update_masks(self, step: int) -> None:
        a_t = drop_fraction_at(step, drop_fraction=self.drop_fraction, t_end=self.t_end)
        weights = self.weights()
        new_masks, record = {}, {"step": step, "drop_fraction": a_t, "layers": {}}
        for n, w in weights.items():
            mask = self.masks[n]
            grad = w.grad if w.grad is not None else torch.zeros_like(w)
            active = int(mask.sum())
            k = int(math.floor(a_t * active))
            # drop: the k active weights of smallest magnitude (inactive ones score -inf so they are never kept)
            keep_score = torch.where(mask, w.abs().float(), torch.full_like(w, -math.inf, dtype=torch.float32))
            kept = M.topk_mask(keep_score, active - k)
            # grow: the k non-kept weights of largest |dense grad|
            grow_score = torch.where(kept, torch.full_like(w, -math.inf, dtype=torch.float32), grad.abs().float())
            grown = M.topk_mask(grow_score, k)
            new = kept | grown
            new_masks[n] = new
            w[grown & ~mask] = 0.0  # regrown connections start at zero
            record["layers"][n] = {"dropped": int((mask & ~new).sum()), "grown": int((new & ~mask).sum()),
                                   "active": active}
        self.set_masks(new_masks)
        self.updates.append(record)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "n_updates": len(self.updates)}
