"""RigL (Evci et al. 2020, google-research/rigl): dynamic sparse training with gradient-based regrowth.

Facts taken from the reference (rigl/sparse_optimizers_base.py, SparseRigLOptimizerBase; imagenet_train_eval.py):
- Initial masks: random, with ERK (default) or uniform layer densities and exact counts (mask_init_method
  "random" + erdos_renyi_kernel sparsities).
- Update steps: every `delta_t` steps (default 100, reference maskupdate_frequency=100) while step < t_end =
  `end_fraction` (0.75) x total steps. Drop fraction a_t = a/2 (1 + cos(pi t / t_end)), a = `drop_fraction` (0.3):
  the reference's drop_fraction_anneal="cosine" = cosine_decay(a, global_step, end_step - begin_step), begin 0.
- Per layer: n_drop = floor(a_t * active) (reference: int cast of n_ones * drop_fraction); keep the
  active - n_drop active weights of largest |w|; grow n_drop connections of largest |dense grad| among all that
  are NOT kept -- so a just-dropped weight can be regrown in the same update, as in the reference (its grow
  scores of kept entries are lifted below the minimum, nothing else is excluded).
- Grown weights start at zero (grow_init="zeros") with zeroed optimizer state (reference reset_momentum over all
  optimizer slots). With the reference's reinit_when_same=False, a weight dropped and regrown in the same update
  is NOT a new connection: it keeps its value and state; we do the same.
- The optimizer update is SKIPPED on mask-update steps (the reference's cond(is_mask_update_iter,
  mask_update_op, apply_gradient_op)); before_step returns False.
Where we differ, on purpose:
- Ties: the reference adds N(0, 1e-5) noise to the drop scores; we break ties by flat index (exact, identical on
  every rank without an RNG). Only active weights compete to be kept (the noise could, in principle, keep an
  inactive zero over an active weight smaller than ~1e-5; we never do).
- Our `step` counts skipped steps; the reference's global step does not advance on update iterations, and it
  also updates at step 0. We update at delta_t, 2 delta_t, ... (no update before any training step).
- Dropped weights are set to zero with zeroed optimizer state (the reference keeps them behind a mask); with
  masks applied by zeroing, that is what keeps them exactly zero.
The dense gradient is free: masks zero the weights, not the graph, so p.grad is dense; it is read in
before_step on update steps only (after DDP's all-reduce, so every rank computes the same masks; masks are
broadcast from rank 0 anyway).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ham.sparse import masks as M
from ham.sparse.distributions import layer_densities
from ham.sparse.masked import MaskedSparsifier
from ham.sparse.random_pai import random_masks
from ham.sparse.schedules import drop_fraction_at


class RigL(MaskedSparsifier):
    name = "rigl"

    def __init__(self, sparsity: float = 0.9, distribution: str = "erk", delta_t: int = 100,
                 drop_fraction: float = 0.3, end_fraction: float = 0.75, seed: int = 0,
                 keep_first_dense: bool = False, keep_last_dense: bool = False, delta_t_batch: int | None = None,
                 min_updates: int = 0):
        super().__init__(sparsity, keep_first_dense, keep_last_dense)
        if not isinstance(delta_t, int) or isinstance(delta_t, bool) or delta_t < 1:
            raise ValueError(f"delta_t={delta_t!r} is not allowed; it must be an integer >= 1")
        if delta_t_batch is not None and int(delta_t_batch) < 1:
            raise ValueError(f"delta_t_batch={delta_t_batch!r} is not allowed; use null or an integer >= 1")
        if int(min_updates) < 0:
            raise ValueError(f"min_updates={min_updates!r} is not allowed; it must be >= 0")
        self.delta_t_config, self.delta_t_batch, self.min_updates = int(delta_t), delta_t_batch, int(min_updates)
        for key, v in (("drop_fraction", drop_fraction), ("end_fraction", end_fraction)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v <= 1:
                raise ValueError(f"{key}={v!r} is not allowed; it must be a number in (0, 1]")
        layer_densities({"x": (1, 1)}, 0.0, distribution)  # validate the name early
        self.distribution, self.delta_t, self.drop_fraction = distribution, int(delta_t), float(drop_fraction)
        self.end_fraction, self.seed = float(end_fraction), int(seed)
        self.updates: list[dict[str, Any]] = []  # per update: step, a_t, per-layer counts (tests, logs)
        self.n_updates = 0

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        self.t_end = max(1, int(self.end_fraction * schedule.total_steps))
        self.delta_t = self.effective_delta_t(schedule)
        device = next(iter(self.weights().values())).device
        self.set_masks(random_masks(self.shapes(), self.sparsity, self.distribution, self.seed, device))

    def effective_delta_t(self, schedule) -> int:
        """delta_t in this run's steps. With delta_t_batch set, delta_t counts steps at that global batch and is
        scaled to this run's (reference: 100 steps at batch 4096 -> 400 at 1024: the same ~234 updates in a
        100-epoch ImageNet run); min_updates then caps it so a short run still gets that many updates."""
        dt = self.delta_t_config
        if self.delta_t_batch and schedule.global_batch_size:
            dt = max(1, round(dt * int(self.delta_t_batch) / schedule.global_batch_size))
        if self.min_updates:
            dt = max(1, min(dt, (self.t_end - 1) // self.min_updates))
        return dt

    def is_update_step(self, step: int) -> bool:
        return step > 0 and step % self.delta_t == 0 and step < self.t_end

    def skips_update(self, step: int) -> bool:
        return self.is_update_step(step)

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
            # n_drop counts every drop (also those regrown at once); dropped/grown: net changes of the mask
            record["layers"][n] = {"active": active, "n_drop": k, "dropped": int((mask & ~new).sum()),
                                   "grown": int((new & ~mask).sum())}
        self.set_masks(new_masks)  # zeroes pruned weights and the optimizer state of dropped and new entries
        self.updates.append(record)
        self.n_updates += 1

    def report(self) -> dict[str, Any]:
        """For summary.json: the update schedule and how many updates ran."""
        return {"delta_t": self.delta_t, "delta_t_config": self.delta_t_config, "delta_t_batch": self.delta_t_batch,
                "t_end": self.t_end, "drop_fraction": self.drop_fraction,
                "distribution": self.distribution, "n_updates": self.n_updates}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "n_updates": self.n_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.n_updates = int(state.get("n_updates", 0))
