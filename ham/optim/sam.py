"""Sharpness-Aware Minimization (Foret et al. 2021) around any base optimizer; composes with HAM (SAM-HAM).

    sam = SAM(torch.optim.SGD(params, lr=0.1, momentum=0.9), rho=0.05)
    opt = HAM(sam, alpha=200, beta=1e-3)
    loss(w).backward();  sam.first_step();  opt.zero_grad()       # w <- w + e(w), e = rho g / ||g||
    with bn_stats_frozen(model):
        loss(w + e).backward()
    opt.step()                                                     # w restored, base step with g(w+e), then HYP*

``SAM.step()`` without a closure means "second step" when a first step is pending (restore w exactly, then the
base step with the gradient now in ``p.grad``, i.e. the one at the perturbed point), and the plain base step
otherwise. So ``HAM(SAM(...)).step()`` applies the hyperbolic step after SAM's real step, with the
perturbed-point gradient and the current lr. ``step(closure)`` runs both passes itself.

DDP: SAM communicates nothing. The trainer runs the first backward under ``no_sync``, so each rank ascends along
its own LOCAL gradient (norm over its local grads), as in the reference DDP usage; the second backward is
all-reduced as usual, so the real step is identical on every rank.

Checkpoints: ``state_dict`` is the base optimizer's (its state plus the param groups, which carry SAM's
per-group ``rho``/``adaptive``). The saved pre-perturbation weights matter only between ``first_step`` and the
second step and are not checkpointed; ``state_dict()`` refuses to run in that window because the model's weights
are perturbed then.

Adaptive SAM (ASAM, Kwon et al. 2021): e = rho * w^2 g / ||w g||.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from ham.optim.wrapper import OptimizerWrapper


class SAM(OptimizerWrapper):
    """SAM around an already built ``optimizer``.

    Args:
        rho: radius of the ascent step (default for groups without their own ``rho`` key); 0 = base optimizer.
        adaptive: ASAM (default for groups without their own ``adaptive`` key).
        eps: added to the gradient norm (zero gradients give a zero perturbation).
        foreach: None (auto): multi-tensor kernels on accelerators, per-tensor ops on CPU (there, fresh
            model-sized temporaries cost more than the arithmetic); True/False force one way.

    Memory: one copy of the weights that have gradients (the pre-perturbation values), allocated once and reused.
    """

    def __init__(self, optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False, eps: float = 1e-12,
                 foreach: bool | None = None):
        if not rho >= 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        super().__init__(optimizer)
        self.rho, self.adaptive, self.eps, self.foreach = float(rho), bool(adaptive), float(eps), foreach
        self.fill_group_defaults()
        self._old: dict[int, Tensor] = {}  # id(param) -> buffer for its pre-perturbation value
        # (params, their saved values) per (group, device) while a first step is pending, else None
        self._pending: list[tuple[list[Tensor], list[Tensor]]] | None = None

    def fill_group_defaults(self) -> None:
        for g in self.base.param_groups:
            g.setdefault("rho", self.rho)
            g.setdefault("adaptive", self.adaptive)

    def __repr__(self) -> str:
        return f"SAM(rho={self.rho}, adaptive={self.adaptive})\n  around {self.base!r}"

    @property
    def pending(self) -> bool:
        """True between first_step and the second step (or restore): the weights are perturbed."""
        return self._pending is not None

    def _use_foreach(self, device: torch.device) -> bool:
        return device.type != "cpu" if self.foreach is None else self.foreach

    def _buckets(self) -> list[tuple[dict[str, Any], torch.device, list[Tensor]]]:
        """(group, device, params with a grad) -- foreach kernels need one device per list."""
        out = []
        for g in self.param_groups:
            by_device: dict[torch.device, list[Tensor]] = defaultdict(list)
            for p in g["params"]:
                if p.grad is not None:
                    if p.grad.is_sparse:
                        raise RuntimeError("SAM does not support sparse gradients")
                    by_device[p.device].append(p)
            out += [(g, device, ps) for device, ps in by_device.items()]
        return out

    def _grad_norm(self, buckets) -> Tensor:
        parts = []
        for g, device, ps in buckets:
            grads = [p.grad for p in ps]
            if self._use_foreach(device):
                parts += torch._foreach_norm(torch._foreach_mul(ps, grads) if g["adaptive"] else grads)
            else:  # ||w g|| = || |w| g ||: no abs needed
                parts += [torch.linalg.vector_norm(p * p.grad if g["adaptive"] else p.grad) for p in ps]
        first = parts[0].device
        # fp32 at least: bf16/fp16 grads would give a norm with 2-3 significant digits
        parts = [n.to(first, torch.promote_types(n.dtype, torch.float32)) for n in parts]
        return torch.linalg.vector_norm(torch.stack(parts))

    def _saved_copy(self, ps: list[Tensor]) -> list[Tensor]:
        old = []
        for p in ps:
            buf = self._old.get(id(p))
            if buf is None or buf.shape != p.shape or buf.dtype != p.dtype or buf.device != p.device:
                buf = self._old[id(p)] = torch.empty_like(p)
            old.append(buf)
        torch._foreach_copy_(old, ps)
        return old

    @torch.no_grad()
    def first_step(self) -> None:
        """w <- w + e(w), e = rho * g / ||g|| (adaptive: rho * w^2 g / ||w g||).

        ||.|| is over every parameter with a gradient, in all groups. Torch ops only: no host sync."""
        if self.pending:
            raise RuntimeError("SAM.first_step() called twice without a second step (or restore()) in between")
        buckets = self._buckets()
        if not buckets:
            return
        norm = self._grad_norm(buckets)
        pending = []
        for g, device, ps in buckets:
            # an exact copy to restore from: (w + e) - e != w in floating point, and it wipes out weights far
            # smaller than e -- exactly the small weights HAM drives towards zero
            old = self._saved_copy(ps)
            pending.append((ps, old))
            factor = (g["rho"] / (norm + self.eps)).to(device)
            if self._use_foreach(device):
                e = torch._foreach_mul([p.grad for p in ps], factor)
                if g["adaptive"]:
                    torch._foreach_mul_(e, old)
                    torch._foreach_mul_(e, old)
                torch._foreach_add_(ps, e)
            else:
                for p, w in zip(ps, old):
                    p.addcmul_(p.grad.mul(w).mul_(w) if g["adaptive"] else p.grad, factor)
        self._pending = pending

    @torch.no_grad()
    def restore(self) -> None:
        """Undo a pending first step (w back to its exact old value); no-op otherwise.

        The second step calls it; call it yourself when the update is skipped after a first step."""
        if self._pending is None:
            return
        for ps, old in self._pending:
            torch._foreach_copy_(ps, old)
        self._pending = None

    @torch.no_grad()
    def second_step(self):
        """Restore w, then the base step with the gradient now in p.grad (the one at the perturbed point)."""
        self.restore()
        return self.base.step()

    def step(self, closure: Callable[[], Any] | None = None):
        """No closure: the second step if a first step is pending, else the plain base step.

        With a closure (forward + backward, returning the loss): both passes; returns the first pass's loss."""
        if closure is None:
            return self.second_step() if self.pending else self.base.step()
        if self.pending:
            raise RuntimeError("SAM.step(closure) called while a first step is pending; call step() instead")
        with torch.enable_grad():
            loss = closure()
        self.first_step()
        self.zero_grad()
        with torch.enable_grad():
            closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        if self.pending:
            raise RuntimeError("SAM.state_dict() called between first_step and the second step: the weights are "
                               "perturbed; checkpoint after opt.step() (or after restore())")
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = None  # the weights are being replaced too; never write the old ones back over them
        super().load_state_dict(state_dict)


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
    """BatchNorm running statistics are not updated inside (SAM's second pass); the forward still normalizes
    with batch statistics in train mode.

    As in the reference: momentum 0 inside, so running = (1 - 0) * running + 0 * batch stays as it is. That also
    covers cumulative-average BN (momentum=None), whose 1/num_batches_tracked factor is replaced for the
    duration; num_batches_tracked (incremented by every train-mode forward) is put back on exit.
    """
    saved = []
    for m in _bn_modules(model):
        nbt = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
        saved.append((m, m.momentum, nbt))
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, nbt in saved:
            m.momentum = momentum
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
