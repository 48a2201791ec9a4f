"""Training metrics computed only at log steps: L1 norm (Fig. 4) and sign flips (Fig. 2a)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


@torch.no_grad()
def l1_norm(params: list[Tensor]) -> float:
    """Mean |w| over the given tensors (the paper's "average L1 norm"), one host sync."""
    if not params:
        return 0.0
    total = torch.stack([p.detach().abs().sum(dtype=torch.float64) for p in params]).sum()
    return float(total.item()) / sum(p.numel() for p in params)


def _signs(p: Tensor) -> Tensor:
    return torch.sign(p.detach()).to(torch.int8)


class SignTracker:
    """Fraction of weights whose sign flipped since the previous log and since initialisation.

    A flip is a strict change of sign, sign(before) * sign(now) < 0; a weight that becomes exactly zero (pruning,
    underflow) or leaves zero is not a flip. Memory: two int8 snapshots, i.e. 2 bytes per tracked weight, kept on
    the weights' device; work happens only when `update()` is called (at log steps).
    """

    def __init__(self, params: list[Tensor]):
        self.params = list(params)
        self.numel = sum(p.numel() for p in self.params)
        self.init = [_signs(p) for p in self.params]
        self.prev = [s.clone() for s in self.init]

    @torch.no_grad()
    def update(self) -> dict[str, float]:
        if not self.numel:
            return {"train/sign_flips": 0.0, "train/sign_flips_init": 0.0}
        flips_prev, flips_init = [], []
        for i, p in enumerate(self.params):
            now = _signs(p)
            flips_prev.append(((now * self.prev[i]) < 0).sum())
            flips_init.append(((now * self.init[i]) < 0).sum())
            self.prev[i] = now
        counts = torch.stack([torch.stack(flips_prev).sum(), torch.stack(flips_init).sum()]).tolist()
        return {"train/sign_flips": counts[0] / self.numel, "train/sign_flips_init": counts[1] / self.numel}

    def state_dict(self) -> dict[str, Any]:
        return {"init": [s.cpu() for s in self.init], "prev": [s.cpu() for s in self.prev]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["init"]) != len(self.params):
            raise ValueError("sign tracker state does not match the tracked parameters")
        dev = [p.device for p in self.params]
        self.init = [s.to(d) for s, d in zip(state["init"], dev)]
        self.prev = [s.to(d) for s, d in zip(state["prev"], dev)]
