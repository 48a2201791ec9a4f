"""STR, Soft Threshold Reparameterization (Kusupati et al. 2020, RAIVNLab/STR).

Effective weight of each prunable layer: sign(W) * relu(|W| - sigmoid(s)), with one learnable scalar s of
shape [1, 1] per layer (as in the reference), registered with torch.nn.utils.parametrize so the model code is
untouched and the exported weights are the effective ones. Knobs: `s_init` and `threshold_weight_decay` (the
reference applies the global weight decay to s as well: null = use optimizer.weight_decay).
HAM never touches s: the thresholds sit in their own param group with ham=False.

STR cannot hit an exact target sparsity (RAIVNLab/STR issue #14). With `exact_target: true` (default) the run
ends with a projection to exactly `sparsity`, counted over all prunable weights:
  - STR under-pruned (usual): the smallest-magnitude effective weights are zeroed (global top-k);
  - STR over-pruned: the pruned weights with the largest |W| are re-activated at their dense value W.
The sparsity STR reached by itself is kept and reported (`report()["str_sparsity_before_projection"]`).
Our default s_init = -5 (sigmoid = 0.0067) gives thresholds a usable gradient on small problems; the
reference's ImageNet configurations use other values: set sparsifier.s_init accordingly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ham.sparse import masks as M
from ham.sparse.base import Sparsifier, TrainSchedule


class SoftThreshold(nn.Module):
    def __init__(self, s_init: float):
        super().__init__()
        self.s = nn.Parameter(torch.full((1, 1), float(s_init)))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.sign(w) * torch.relu(w.abs() - torch.sigmoid(self.s))


class STR(Sparsifier):
    name = "str"

    def __init__(self, sparsity: float = 0.9, s_init: float = -5.0, threshold_weight_decay: float | None = None,
                 exact_target: bool = True, keep_first_dense: bool = False, keep_last_dense: bool = False):
        self.sparsity, self.s_init = float(sparsity), float(s_init)
        self.threshold_weight_decay, self.exact_target = threshold_weight_decay, bool(exact_target)
        self.keep_first_dense, self.keep_last_dense = keep_first_dense, keep_last_dense
        self.reached: float | None = None
        self.model = self.optimizer = None

    def setup(self, model: nn.Module, schedule: TrainSchedule) -> None:
        super().setup(model, schedule)
        self.layers = dict(M.prunable_layers(model, keep_first_dense=self.keep_first_dense,
                                             keep_last_dense=self.keep_last_dense))
        for module in self.layers.values():
            dev = module.weight.device
            parametrize.register_parametrization(module, "weight", SoftThreshold(self.s_init).to(dev))

    def thresholds(self) -> list[nn.Parameter]:
        return [m.parametrizations.weight[0].s for m in self.layers.values()]

    def param_group_overrides(self) -> list[dict[str, Any]]:
        group: dict[str, Any] = {"params": self.thresholds(), "ham": False}
        if self.threshold_weight_decay is not None:
            group["weight_decay"] = float(self.threshold_weight_decay)
        return [group]

    @torch.no_grad()
    def effective(self) -> dict[str, torch.Tensor]:
        return {n: m.weight for n, m in self.layers.items()}

    @torch.no_grad()
    def on_train_end(self) -> None:
        eff = self.effective()
        total = sum(w.numel() for w in eff.values())
        self.reached = sum(int((w == 0).sum()) for w in eff.values()) / total
        if not self.exact_target:
            return
        n_keep = int(round((1 - self.sparsity) * total))
        names = list(eff)
        raw = {n: self.layers[n].parametrizations.weight.original for n in names}
        n_nonzero = total - int(round(self.reached * total))
        if n_nonzero >= n_keep:  # under-pruned: zero the smallest effective weights
            keep = M.global_magnitude_masks(eff, self.sparsity)
            for n in names:
                raw[n].mul_(keep[n])
        else:  # over-pruned: re-activate the largest |W| among pruned entries at their dense value
            pruned_score = {n: torch.where(eff[n] == 0, raw[n].abs(), torch.zeros_like(raw[n])) for n in names}
            extra = M.global_magnitude_masks(pruned_score, 1 - (n_keep - n_nonzero) / total)
            for n in names:
                thr = torch.sigmoid(self.layers[n].parametrizations.weight[0].s)
                raw[n].copy_(torch.where(extra[n], torch.sign(raw[n]) * (raw[n].abs() + thr), raw[n]))

    def report(self) -> dict[str, Any]:
        return {"str_sparsity_before_projection": self.reached, "exact_target": self.exact_target}

    def state_dict(self) -> dict[str, Any]:
        return {"reached": -1.0 if self.reached is None else self.reached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r = state.get("reached", -1.0)
        self.reached = None if r < 0 else r
