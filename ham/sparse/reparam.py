"""theta = m * w, the pointwise overparameterization behind PILoT, Sign-In and the m*w baseline.

`ProductWeight` is a torch parametrization: the module's trainable `original` is w, the parametrization holds m.
Assigning a weight (module.weight = theta) calls `right_inverse`, which re-balances the pair so that
m^2 - w^2 = gamma and m * w = theta:
    m = sqrt((gamma + sqrt(gamma^2 + 4 theta^2)) / 2),   w = theta / m.
This is both the initialisation (gamma = 1) and Sign-In's periodic reset.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def balanced_factors(theta: torch.Tensor, gamma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.sqrt((gamma + torch.sqrt(gamma * gamma + 4 * theta * theta)) / 2)
    return m, theta / m


class ProductWeight(nn.Module):
    def __init__(self, shape: torch.Size, gamma: float = 1.0):
        super().__init__()
        self.gamma = gamma
        self.m = nn.Parameter(torch.ones(shape))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.m * w

    @torch.no_grad()
    def right_inverse(self, theta: torch.Tensor) -> torch.Tensor:
        m, w = balanced_factors(theta.detach(), self.gamma)
        self.m.copy_(m)
        return w


def register_product(module: nn.Module, gamma: float = 1.0) -> ProductWeight:
    p = ProductWeight(module.weight.shape, gamma).to(module.weight.device, module.weight.dtype)
    parametrize.register_parametrization(module, "weight", p)
    return p


def factors(module: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """(m, w) of a module registered with `register_product`."""
    return module.parametrizations.weight[0].m, module.parametrizations.weight.original


@torch.no_grad()
def rebalance_(module: nn.Module) -> None:
    """Reset m^2 - w^2 to gamma keeping theta = m * w fixed."""
    m, w = factors(module)
    module.weight = (m * w).clone()


@torch.no_grad()
def add_product_weight_decay_grad_(module: nn.Module, wd: float) -> None:
    """Gradient of wd/2 * sum((m * w)^2) added to m.grad and w.grad: d/dm = wd * theta * w, d/dw = wd * theta * m."""
    m, w = factors(module)
    theta = m * w
    for p, other in ((m, w), (w, m)):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.add_(theta * other, alpha=wd)


def reparameterize_layers(model: nn.Module, *, keep_first_dense: bool, keep_last_dense: bool, gamma: float = 1.0
                          ) -> dict[str, nn.Module]:
    """theta = m * w on every prunable layer; returns {name: module}."""
    from ham.sparse.masks import prunable_layers

    layers = dict(prunable_layers(model, keep_first_dense=keep_first_dense, keep_last_dense=keep_last_dense))
    for module in layers.values():
        register_product(module, gamma)
    return layers


def product_param_groups(layers: dict[str, nn.Module], *, decay_factors: bool) -> list[dict]:
    """m never stepped by HAM; with decay_factors=False neither m nor w gets plain weight decay."""
    ms = [factors(m)[0] for m in layers.values()]
    if decay_factors:
        return [{"params": ms, "ham": False}]
    ws = [factors(m)[1] for m in layers.values()]
    return [{"params": ms, "ham": False, "weight_decay": 0.0}, {"params": ws, "weight_decay": 0.0}]
