"""STR, Soft Threshold Reparameterization (Kusupati et al., ICML 2020; reference code RAIVNLab/STR).

Facts from the reference (utils/conv_type.py, main.py, args.py, configs/largescale/*-str.yaml):
  - effective weight  sign(W) * relu(|W| - sigmoid(s)): `sparseFunction` with f = sigmoid, activation = relu;
  - s is ONE learnable scalar per layer, an nn.Parameter of shape [1, 1] (`sparseThreshold`), initialised to the
    constant `sInit_value` (configs: ResNet50 90.23% sparse -3200 with weight decay 2.251757813e-5; MobileNetV1
    -12800 with 3.751757813e-5; SGD momentum 0.875, lr 0.256 cosine, 5 warm-up epochs, 100 epochs, batch 256,
    label smoothing 0.1; the config comments point to the paper's appendix for other sparsities; for CIFAR the
    maintainer advises |sInit| around 100 and weight decay above 5e-4, RAIVNLab/STR issue #2);
  - the thresholds sit in their own SGD param group whose weight decay is `--st-decay`, default None = the global
    weight decay. With a very negative s_init, sigmoid'(s) underflows to 0, so at first ONLY weight decay moves s
    (shrinking it towards 0 with momentum); once sigmoid(s) is comparable to the weights, the loss gradient takes
    part. s_init and weight decay are therefore the two knobs that set the final sparsity;
  - every conv (incl. the first) and the fc (a 1x1 STRConv) are sparsified unless --first/last-layer-dense.

Here: a torch parametrization per prunable layer, so model code is untouched and `module.weight` / the exported
state_dict are the effective weights. HAM never steps s: the thresholds are returned in an override group with
ham=False.

`mode: reference` (the default) is STR as published: fixed `s_init` + the thresholds' weight decay
(`threshold_weight_decay`, None = the optimizer's, as the reference's --st-decay), nothing else. The sparsity it
reaches is whatever those two give; `sparsifier.sparsity` is then only the cell's target, and the summary reports
the sparsity reached (`sparsity`, and `str_sparsity_before_projection` in the sparsifier report). The one
published pair for ResNet50 is for STR's own recipe (90.23 %: s_init -3200, decay 2.251757813e-5, SGD momentum
0.875, lr 0.256 cosine, batch 256, 100 epochs); the STR README points to the paper's appendix for the other points
(81.27 %, 95.15 % ...), whose values we could not retrieve. How to calibrate the decay for another recipe:
`sweep.py --table str_decay` (README). `s_init` defaults to -5.0 (ours: sigmoid = 0.0067, a usable gradient on
short CPU runs; set the reference values for ImageNet).

Ours, opt-in and named as ours in every table ("STR + budget (ours)", "STR + projection (ours)"):

Budget mode (`mode: budget`): STR reaches `sparsity` by itself. STR alone cannot be told a sparsity
(RAIVNLab/STR issue #14). Here a sparsity budget b(t) rises from 0 to `sparsity` with the cubic schedule of
gradual magnitude pruning (Zhu & Gupta 2018) between `budget_start_fraction` and `budget_end_fraction` of
training, and every `budget_every` steps (after the optimizer step) a controller adds ONE common offset d to every
layer's s so that the global sparsity of the effective weights equals round(b(t) N): d is found by bisection on
the device (branchless: no host sync), the layers' relative thresholds stay what STR learned (the per-layer budget
is still STR's), W and the optimizer state are untouched. After budget_end_fraction the controller holds the
target, so STR's own sparsity at the end is the target up to ties. Why an offset on s rather than a controller on
the thresholds' weight decay: the decay acts through lr * wd * s and the lr falls to 0 at the end of a
triangular/cosine schedule, so a decay controller loses authority exactly when the target must be met.

Exact target (`exact_target: true`; off by default, in both modes): `on_train_end()` projects the effective
weights to exactly round((1 - sparsity) * N) non-zeros over the sparsified layers (N = their weight count), with
one global magnitude order:
  - STR under-pruned: the smallest-magnitude effective weights are zeroed (W := 0 there);
  - STR over-pruned: the pruned entries with the largest |W| come back at their dense value W
    (W := sign(W) (|W| + sigmoid(s)), so that the effective weight equals the old W; at least 1 ulp).
The sparsity STR reached by itself is kept (state_dict) and reported: `report()["str_sparsity_before_projection"]`.
`on_train_end` is idempotent (a resumed finished run calls it again: the second call changes nothing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ham.sparse import masks as M
from ham.sparse import reparam
from ham.sparse.base import Sparsifier, TrainSchedule
from ham.sparse.schedules import cubic_budget


class SoftThreshold(nn.Module):
    """Parametrization sign(W) * relu(|W| - sigmoid(s)) with a learnable s of shape [1, 1]."""

    def __init__(self, s_init: float, like: Tensor):
        super().__init__()
        self.s = nn.Parameter(torch.full((1, 1), float(s_init), device=like.device, dtype=like.dtype))

    def threshold(self) -> Tensor:
        return torch.sigmoid(self.s)

    def forward(self, w: Tensor) -> Tensor:
        return torch.sign(w) * torch.relu(w.abs() - self.threshold())


class STR(Sparsifier):
    name = "str"

    def __init__(self, sparsity: float = 0.9, s_init: float = -5.0, threshold_weight_decay: float | None = None,
                 exact_target: bool = False, keep_first_dense: bool = False, keep_last_dense: bool = False,
                 mode: str = "reference", budget_start_fraction: float = 0.0, budget_end_fraction: float = 0.75,
                 budget_every: int = 10):
        if threshold_weight_decay is not None and float(threshold_weight_decay) < 0:
            raise ValueError(f"threshold_weight_decay={threshold_weight_decay!r} is not allowed; "
                              f"use null (the optimizer's weight decay) or a number >= 0")
        if mode not in ("budget", "reference"):
            raise ValueError(f"mode={mode!r} is not allowed; allowed: budget, reference")
        if not 0 <= budget_start_fraction < budget_end_fraction <= 1:
            raise ValueError(f"budget_start_fraction={budget_start_fraction}, budget_end_fraction="
                             f"{budget_end_fraction}: need 0 <= start < end <= 1")
        if int(budget_every) < 1:
            raise ValueError(f"budget_every={budget_every!r} is not allowed; it must be >= 1")
        self.mode, self.budget_every = mode, int(budget_every)
        self.budget_start, self.budget_end = float(budget_start_fraction), float(budget_end_fraction)
        self.sparsity, self.s_init = float(sparsity), float(s_init)
        self.threshold_weight_decay = None if threshold_weight_decay is None else float(threshold_weight_decay)
        self.exact_target = bool(exact_target)
        self.keep_first_dense, self.keep_last_dense = bool(keep_first_dense), bool(keep_last_dense)
        self.reached: float | None = None  # STR's own sparsity at the end, before any projection
        self.projected = False
        self.model = self.optimizer = None

    # -- setup
    def setup(self, model: nn.Module, schedule: TrainSchedule) -> None:
        super().setup(model, schedule)
        self.layers = self.select_layers(model)
        for module in self.layers.values():
            parametrize.register_parametrization(module, "weight", SoftThreshold(self.s_init, module.weight))

    def _param(self, module: nn.Module) -> SoftThreshold:
        return module.parametrizations.weight[0]

    def thresholds(self) -> list[nn.Parameter]:
        """The learnable s of every layer (never stepped by HAM)."""
        return [self._param(m).s for m in self.layers.values()]

    def param_group_overrides(self) -> list[dict[str, Any]]:
        group: dict[str, Any] = {"params": self.thresholds(), "ham": False}
        if self.threshold_weight_decay is not None:
            group["weight_decay"] = self.threshold_weight_decay
        return [group]

    # -- accounting
    @torch.no_grad()
    def effective(self) -> dict[str, Tensor]:
        return {n: m.weight.detach() for n, m in self.layers.items()}

    @torch.no_grad()
    def current_sparsity(self) -> float:
        eff = self.effective()
        return sum(int((w == 0).sum()) for w in eff.values()) / sum(w.numel() for w in eff.values())

    # -- budget controller
    def budget(self, step: int) -> float:
        """Target sparsity after optimizer step `step` (0-based): cubic from 0 to `sparsity`."""
        return cubic_budget(step, sparsity=self.sparsity, total_steps=self.schedule.total_steps,
                            start_fraction=self.budget_start, end_fraction=self.budget_end)

    def after_step(self, step: int) -> None:
        if self.mode != "budget":
            return
        last = step + 1 >= self.schedule.total_steps
        if (step + 1) % self.budget_every == 0 or last:
            self.hold_budget(self.budget(step))

    @torch.no_grad()
    def hold_budget(self, target: float, iterations: int = 48) -> None:
        """Shift every layer's s by one common offset so that round(target * N) effective weights are zero."""
        raw = [M.weight_of(m).detach().abs() for m in self.layers.values()]
        s = torch.cat([self._param(m).s.detach().reshape(1) for m in self.layers.values()]).float()
        total = sum(w.numel() for w in raw)
        want = torch.tensor(float(round(target * total)), device=s.device)

        def zeros_at(offset: Tensor) -> Tensor:  # effective weight is 0 where |W| <= sigmoid(s + offset)
            thr = torch.sigmoid(s + offset)
            return sum(((w <= thr[i].to(w.dtype)).sum() for i, w in enumerate(raw)), torch.zeros((), device=s.device))

        # sigmoid(s + d) sweeps (0, 1) for d in [-40 - max s, 40 - min s]; the zero count is monotone in d
        lo, hi = -40.0 - s.max(), 40.0 - s.min()
        for _ in range(iterations):
            mid = (lo + hi) / 2
            too_many = zeros_at(mid) > want
            hi, lo = torch.where(too_many, mid, hi), torch.where(too_many, lo, mid)
        # the offset whose count is closest to the target (lo undershoots, hi may overshoot by ties)
        err_lo, err_hi = (zeros_at(lo) - want).abs(), (zeros_at(hi) - want).abs()
        offset = torch.where(err_hi < err_lo, hi, lo)
        for m in self.layers.values():
            p = self._param(m).s
            p.add_(offset.to(p.dtype))

    # -- end of training
    def changes_model_at_end(self) -> bool:
        return self.exact_target and not self.projected

    @torch.no_grad()
    def on_train_end(self) -> bool:
        """Record STR's own sparsity, then (exact_target) project to exactly `sparsity`. Call once, before the
        final evaluation and export; later calls are no-ops. True if it projected now."""
        if self.reached is None:
            self.reached = self.current_sparsity()
        if self.exact_target and not self.projected:
            self._project()
            self.projected = True
            return True
        return False

    @torch.no_grad()
    def _project(self) -> None:
        eff = self.effective()
        raw = {n: M.weight_of(self.layers[n]) for n in eff}
        total = sum(w.numel() for w in eff.values())
        n_keep = round((1.0 - self.sparsity) * total)
        n_nonzero = sum(int((w != 0).sum()) for w in eff.values())
        if n_nonzero >= n_keep:  # under-pruned: keep the n_keep largest effective weights
            keep = M.global_magnitude_masks(eff, self.sparsity)
            for n in eff:
                raw[n].mul_(keep[n])  # W = 0 -> effective 0
            return
        # over-pruned: bring back the (n_keep - n_nonzero) pruned entries of largest |W| at their dense value W
        flat_score = torch.cat([torch.where(eff[n] == 0, raw[n].abs(), torch.full_like(raw[n], -1.0)).flatten()
                                for n in eff]).float()
        extra = M.topk_mask(flat_score, n_keep - n_nonzero)
        start = 0
        for n in eff:
            size = raw[n].numel()
            sel = extra[start:start + size].view_as(raw[n])
            start += size
            thr = self._param(self.layers[n]).threshold()
            # |W| + thr gives back the effective value W; the max keeps it non-zero where |W| is below thr's
            # rounding step (or W is exactly 0: it comes back as +1 ulp), so the count is exact in every case
            floor = torch.nextafter(thr, torch.full_like(thr, float("inf")))
            magnitude = torch.maximum(raw[n].abs() + thr, floor)
            restored = torch.where(raw[n] < 0, -magnitude, magnitude)
            raw[n].copy_(torch.where(sel, restored, raw[n]))

    def tracked_weights(self, managed: list[Tensor]) -> list[Tensor]:
        return reparam.effective_tracked_weights(self.layers, managed)

    def export_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """Effective weights under the original keys (parametrizations folded; the live model stays intact)."""
        return reparam.folded_state_dict(model)

    def report(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "budget": {"start_fraction": self.budget_start, "end_fraction": self.budget_end,
                       "every": self.budget_every} if self.mode == "budget" else None,
            "str_sparsity_before_projection": self.reached,
            "exact_target": self.exact_target,
            "projected": self.projected,
            "target_sparsity": self.sparsity,
            "thresholds": {n: float(self._param(m).threshold().detach()) for n, m in self.layers.items()},
        }

    # -- state (s and W live in the model's state_dict)
    def state_dict(self) -> dict[str, Any]:
        return {"reached": -1.0 if self.reached is None else self.reached, "projected": self.projected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        r = float(state.get("reached", -1.0))
        self.reached = None if r < 0 else r
        self.projected = bool(state.get("projected", False))
