"""``HAM``: wrap any built torch optimizer; after each base step apply the hyperbolic step (HYP*).

    opt = HAM(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), alpha=200, beta=1e-3)

The wrapper owns no state of its own: ``param_groups`` and ``state`` ARE the base optimizer's, so LR schedulers
(built on either object), GradScaler, ``zero_grad`` and ``state_dict`` behave exactly as with the base optimizer.

Per param group keys (set them when building the base optimizer, or later on ``opt.param_groups``):
    ham        None (default): hyperbolic step on tensors with ndim >= ``min_ndim``; True: on every tensor
               of the group; False: never (norms, biases, a sparsifier's own parameters, ...)
    ham_alpha  alpha for this group (default: the wrapper's ``alpha``)
    ham_beta   beta for this group (default: the wrapper's ``beta``)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.optim import Optimizer

from ham.optim.functional import BACKENDS, hyperbolic_step_, validate_hparams
from ham.optim.wrapper import OptimizerWrapper

VARIANTS = ("deployed", "signed")


class HAM(OptimizerWrapper):
    """Hyperbolic Aware Minimization around ``optimizer``.

    Args:
        optimizer: an already built torch optimizer (SGD, AdamW, SAM, ...).
        alpha: hyperbolic strength; the paper's vision default is 200. alpha < 0 ("nHAM") is legal.
        beta: multiplicative weight decay (paper: 1e-3 ImageNet, 16e-3 CIFAR100).
        clamp: bound c on the exponent (authors' code: 5); None disables it.
        variant: "deployed" = HYP*, sign after the base step (the paper's algorithm); "signed" = sign of the
            weights before the base step (Fig. 3 ablation; remembers one int8 per weight during ``step``).
        beta_where_grad: apply beta only where grad != 0 (appendix D.4, nets with dropout).
        min_ndim: with a group's ``ham`` left at None, only tensors with at least this many dims are stepped.
        backend: "auto" | "fused" | "foreach" | "reference" (see ham.optim.functional).
        max_weight_norm: after the hyperbolic step, every stepped tensor whose L2 norm exceeds this is scaled
            back to it (the authors' code clips at 1000, a safety net the paper does not mention); None: off.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        alpha: float = 200.0,
        beta: float = 1e-3,
        *,
        clamp: float | None = 5.0,
        variant: str = "deployed",
        beta_where_grad: bool = False,
        min_ndim: int = 2,
        backend: str = "auto",
        max_weight_norm: float | None = None,
    ) -> None:
        super().__init__(optimizer)
        validate_hparams(alpha, beta, clamp)
        if variant not in VARIANTS:
            raise ValueError(f"unknown HAM variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown HAM backend {backend!r}; allowed: {', '.join(BACKENDS)}")
        self.alpha, self.beta, self.clamp = float(alpha), float(beta), clamp
        self.variant, self.beta_where_grad = variant, bool(beta_where_grad)
        self.min_ndim, self.backend = int(min_ndim), backend
        if max_weight_norm is not None and not max_weight_norm > 0:
            raise ValueError(f"max_weight_norm={max_weight_norm!r} is not allowed; it must be > 0 or None")
        self.max_weight_norm = None if max_weight_norm is None else float(max_weight_norm)
        self.fill_group_defaults()

    def fill_group_defaults(self) -> None:
        for group in self.base.param_groups:
            group.setdefault("ham", None)
            group.setdefault("ham_alpha", self.alpha)
            group.setdefault("ham_beta", self.beta)

    def __repr__(self) -> str:
        return (f"HAM(alpha={self.alpha}, beta={self.beta}, clamp={self.clamp}, variant={self.variant}, "
                f"backend={self.backend})\n  around {self.base!r}")

    def managed_params(self) -> list[Tensor]:
        """The tensors the hyperbolic step acts on (with the current group settings)."""
        return [p for group in self.param_groups for p in self._group_params(group)]

    def _group_params(self, group: dict[str, Any]) -> list[Tensor]:
        flag = group.get("ham")
        if flag is False:
            return []
        return [p for p in group["params"] if flag is True or p.ndim >= self.min_ndim]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        signs = None
        if self.variant == "signed":
            from ham.optim.sam import sam_of

            sam = sam_of(self.base)
            if sam is not None and sam.pending:
                sam.restore()  # the signs must be those of x_k, not of SAM's perturbed point
            signs = self._remember_signs()
        loss = self.base.step(closure) if closure is not None else self.base.step()
        self.hyperbolic_step(signs)
        return loss

    @torch.no_grad()
    def hyperbolic_step(self, signs: dict[int, Tensor] | None = None) -> None:
        """The hyperbolic step alone, with the grads currently in ``p.grad`` (called by ``step``)."""
        for group in self.param_groups:
            alpha, beta = group["ham_alpha"], group["ham_beta"]
            if alpha == 0 and beta == 0:
                continue
            params, grads, sgn = [], [], []
            for p in self._group_params(group):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("HAM does not support sparse gradients")
                params.append(p)
                grads.append(p.grad)
                if signs is not None:
                    sgn.append(signs[id(p)])
            hyperbolic_step_(
                params, grads, lr=group["lr"], alpha=alpha, beta=beta, clamp=self.clamp,
                signs=sgn if signs is not None else None, beta_where_grad=self.beta_where_grad,
                backend=self.backend,
            )
            if self.max_weight_norm is not None and params:
                clip_norms_(params, self.max_weight_norm)

    def _remember_signs(self) -> dict[int, Tensor]:
        return {id(p): torch.sign(p).to(torch.int8)
                for group in self.param_groups for p in self._group_params(group) if p.grad is not None}


@torch.no_grad()
def clip_norms_(tensors: list[Tensor], max_norm: float) -> None:
    """Scale every tensor whose L2 norm exceeds `max_norm` back to it (per tensor, in place)."""
    norms = torch._foreach_norm(tensors)
    for t, n in zip(tensors, norms):
        if n > max_norm:  # one host sync per tensor, only when the option is on
            t.mul_(max_norm / n)
