"""Sharpness-Aware Minimization (Foret et al. 2021) around any base optimizer; composes with HAM (SAM-HAM).

    sam = SAM(torch.optim.SGD(params, lr=0.1, momentum=0.9), rho=0.05)
    opt = HAM(sam, alpha=200, beta=1e-3)
    loss(w).backward();  sam.first_step();  opt.zero_grad()       # w <- w + e(w), e = rho g / ||g||
    loss(w + e).backward();  opt.step()                            # restore w, base step with g(w+e), then HYP*

``step()`` with a pending first step performs the second step (restore + base step), so HAM(SAM(...)).step()
applies the hyperbolic step after SAM's real step, with the perturbed-point gradient. Without a pending first
step it is the plain base step. Under DDP the first backward runs under no_sync: each rank ascends along its own
local gradient (the standard DDP use of SAM). The perturbation e lives only between the two steps and is not
checkpointed; the state_dict is the base optimizer's.
Adaptive SAM (Kwon et al. 2021): e = rho * w^2 g / ||w g||.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.optim import Optimizer

from ham.optim.wrapper import OptimizerWrapper


class SAM(OptimizerWrapper):
    def __init__(self, optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False, eps: float = 1e-12):
        if not rho > 0:
            raise ValueError(f"SAM rho must be > 0, got {rho}")
        super().__init__(optimizer)
        self.eps = eps
        self.rho, self.adaptive = rho, adaptive
        self.fill_group_defaults()
        self._perturbation: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None

    def fill_group_defaults(self) -> None:
        for g in self.base.param_groups:
            g.setdefault("rho", self.rho)
            g.setdefault("adaptive", self.adaptive)

    @property
    def pending(self) -> bool:
        return self._perturbation is not None

    @torch.no_grad()
    def first_step(self) -> None:
        """w <- w + e(w) with e = rho * g / ||g|| (adaptive: rho * w^2 g / ||w g||). No host sync."""
        norms = []
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is not None:
                    scale = p.abs() if g["adaptive"] else None
                    norms.append(torch.linalg.vector_norm(p.grad if scale is None else scale * p.grad))
        if not norms:
            return
        norm = torch.linalg.vector_norm(torch.stack(norms))
        self._perturbation = {}
        for g in self.param_groups:
            factor = g["rho"] / (norm + self.eps)
            for p in g["params"]:
                if p.grad is None:
                    continue
                e = p.grad * factor
                if g["adaptive"]:
                    e = e * p.square()
                p.add_(e)
                self._perturbation[id(p)] = (p, e)

    @torch.no_grad()
    def restore(self) -> None:
        """Undo the first step (w <- w - e); used by second_step and when an update is skipped."""
        if self._perturbation is None:
            return
        for p, e in self._perturbation.values():
            p.sub_(e)
        self._perturbation = None

    @torch.no_grad()
    def second_step(self):
        self.restore()
        return self.base.step()

    def step(self, closure: Callable[[], Any] | None = None):
        if closure is None:
            return self.second_step() if self.pending else self.base.step()
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        self.zero_grad()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss


def sam_of(optimizer: Optimizer) -> SAM | None:
    """The SAM inside a stack of wrappers (HAM(SAM(SGD)) -> the SAM), or None."""
    opt = optimizer
    while opt is not None:
        if isinstance(opt, SAM):
            return opt
        opt = getattr(opt, "base", None)
    return None


def _bn_modules(model: nn.Module) -> Iterator[nn.modules.batchnorm._BatchNorm]:
    return (m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))


@contextlib.contextmanager
def bn_stats_frozen(model: nn.Module):
    """BatchNorm running statistics are not updated inside (SAM's second pass).

    With momentum 0 the running mean/var stay as they are (this also covers cumulative-average BN, momentum=None,
    whose factor is replaced for the duration); num_batches_tracked is restored on exit.
    """
    saved = []
    for m in _bn_modules(model):
        saved.append((m, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None))
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, nbt in saved:
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
