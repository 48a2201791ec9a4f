"""SNIP (Lee, Ajanthan & Torr, ICLR 2019): single-shot pruning at initialisation by connection sensitivity.

Score of a weight: |w * dL/dw| at the initial weights, summed over the first `batches` training batches (SNIP
used one). One global threshold over all prunable layers keeps exactly round((1 - sparsity) * N) weights
(ties by index, like Ac/Dc's magnitude pruning); the masks then stay fixed, as for random pruning at init.
Normalising the scores by their sum (the paper's c_j) does not change a global top-k, so it is left out.

The scores come from the run's own first batches through the regular hooks: those steps are mask-update steps
(`skips_update`), the optimizer does not step on them, so the weights are still the initial ones when the masks
are installed (under SAM the perturbation is undone first, as for RigL's updates). Under DDP the gradients are
already all-reduced, so every rank computes the same masks (rank 0's are broadcast anyway).
"""

from __future__ import annotations

from typing import Any

import torch

from ham.sparse import masks as M
from ham.sparse.masked import MaskedSparsifier


class SNIP(MaskedSparsifier):
    name = "snip"

    def __init__(self, sparsity: float = 0.9, batches: int = 1, keep_first_dense: bool = False,
                 keep_last_dense: bool = False):
        super().__init__(sparsity, keep_first_dense, keep_last_dense)
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"batches={batches!r} is not allowed; it must be an integer >= 1")
        self.batches = batches
        self.scores: dict[str, torch.Tensor] = {}
        self.pruned = False

    def skips_update(self, step: int) -> bool:
        return not self.pruned and step < self.batches

    @torch.no_grad()
    def before_step(self, step: int) -> bool:
        if not self.skips_update(step):
            return super().before_step(step)
        for n, w in self.weights().items():
            score = (w * w.grad).abs() if w.grad is not None else torch.zeros_like(w)
            self.scores[n] = score if n not in self.scores else self.scores[n] + score
        if step == self.batches - 1:
            self.set_masks(M.global_magnitude_masks(self.scores, self.sparsity))
            self.scores, self.pruned = {}, True
        return False

    def report(self) -> dict[str, Any]:
        return {"batches": self.batches,
                "layer_density": {n: float(m.float().mean()) for n, m in self.masks.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pruned": self.pruned, "scores": {n: s.cpu() for n, s in self.scores.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        weights = self.weights()
        self.pruned = bool(state.get("pruned", bool(self.masks)))
        self.scores = {n: s.to(weights[n].device) for n, s in state.get("scores", {}).items()}
