"""theta = m * w, the pointwise overparameterization behind PILoT, Sign-In and the dense m*w baseline.

`ProductWeight` is a torch parametrization: the module's trainable `parametrizations.weight.original` is w, the
parametrization module holds m (`parametrizations.weight.0.m`), and `module.weight` is the effective theta = m * w,
so model code is untouched and `effective_state_dict` exports theta under the original key.

Balance. Under gradient flow on (m, w) without weight decay, gamma = m^2 - w^2 is conserved per entry, and theta
moves with the effective learning-rate factor m^2 + w^2 = sqrt(gamma^2 + 4 theta^2): ~gamma near 0, so gamma = 1
behaves like plain training at small weights, while gamma -> 0 freezes weights near 0 (no sign flips). The pair
with a chosen gamma >= 0 and product theta is
    m = sqrt((gamma + sqrt(gamma^2 + 4 theta^2)) / 2),   w = theta / m     (m > 0, sign(w) = sign(theta))
(check: m^2 - w^2 = (m^4 - theta^2) / m^2 = gamma, because m^4 - gamma m^2 - theta^2 = 0). gamma = 1 is both our
initialisation and Sign-In's periodic reset; gamma = 0 gives m = sqrt|theta|, w = sign(theta) sqrt|theta|.
Resets write m and w IN PLACE (copy_), never through `module.weight = ...` (parametrize would `set_` new storage
under the optimizer's and DDP's feet).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


def balanced_factors(theta: Tensor, gamma: float = 1.0) -> tuple[Tensor, Tensor]:
    """(m, w) with m * w = theta and m^2 - w^2 = gamma (gamma >= 0); w = 0 where theta = 0 (also for gamma = 0)."""
    m = torch.sqrt((gamma + torch.sqrt(gamma * gamma + 4 * theta * theta)) / 2)
    w = torch.where(m > 0, theta / torch.where(m > 0, m, torch.ones_like(m)), torch.zeros_like(theta))
    return m, w


class ProductWeight(nn.Module):
    """Parametrization theta = m * w; registering it splits the existing weight into a balanced pair."""

    def __init__(self, weight: Tensor, gamma: float = 1.0):
        super().__init__()
        self.gamma = float(gamma)
        # ones_like keeps device, dtype and memory format (channels_last convs stay channels_last)
        self.m = nn.Parameter(torch.ones_like(weight.detach()))

    def forward(self, w: Tensor) -> Tensor:
        return self.m * w

    @torch.no_grad()
    def right_inverse(self, theta: Tensor) -> Tensor:
        m, w = balanced_factors(theta.detach(), self.gamma)
        self.m.copy_(m)
        return w


def register_product(module: nn.Module, gamma: float = 1.0) -> ProductWeight:
    p = ProductWeight(module.weight, gamma)
    parametrize.register_parametrization(module, "weight", p)
    return p


def factors(module: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """(m, w) of a module registered with `register_product`."""
    return module.parametrizations.weight[0].m, module.parametrizations.weight.original


@torch.no_grad()
def rebalance_(module: nn.Module, gamma: float = 1.0) -> None:
    """Set m^2 - w^2 = gamma keeping theta = m * w (up to rounding); zeros of w stay exactly zero."""
    m, w = factors(module)
    m_new, w_new = balanced_factors(m * w, gamma)
    m.copy_(m_new)
    w.copy_(w_new)


@torch.no_grad()
def rebalance_zeros_(module: nn.Module, gamma: float = 1.0) -> Tensor:
    """Entries with theta = 0 (w = 0: pruned, or just regrown) get the balanced state m = sqrt(gamma);
    returns the bool tensor of those entries."""
    m, w = factors(module)
    zero = w == 0
    m.masked_fill_(zero, gamma ** 0.5)
    return zero


@torch.no_grad()
def add_product_weight_decay_grad_(module: nn.Module, wd: float) -> None:
    """Add the gradient of R = wd/2 * sum((m w)^2) to the grads:  dR/dm = wd * m * w^2,  dR/dw = wd * m^2 * w.

    A coupled L2 term on theta (like SGD's `weight_decay`, it enters momentum), acting on m and w through the
    product only. A missing grad (layer unused in this forward) is created so the decay still applies."""
    if not wd:
        return
    m, w = factors(module)
    theta = m * w
    for p, other in ((m, w), (w, m)):
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.addcmul_(theta, other, value=wd)


def reparameterize_layers(model: nn.Module, *, keep_first_dense: bool, keep_last_dense: bool, gamma: float = 1.0
                          ) -> dict[str, nn.Module]:
    """theta = m * w (balanced with `gamma`) on every prunable layer; returns {name: module}."""
    from ham.sparse.masks import prunable_layers

    layers = dict(prunable_layers(model, keep_first_dense=keep_first_dense, keep_last_dense=keep_last_dense))
    if not layers:
        raise ValueError("the model has no prunable (conv/linear) layers to reparameterize")
    for module in layers.values():
        if parametrize.is_parametrized(module, "weight"):
            raise ValueError(f"layer {type(module).__name__} already has a weight parametrization")
        register_product(module, gamma)
    return layers


def product_param_groups(layers: dict[str, nn.Module], *, decay_factors: bool) -> list[dict]:
    """Override groups: m is never stepped by HAM (ham=False). decay_factors=True: m and w keep the optimizer's
    weight decay (w stays in the default groups); False: neither gets plain weight decay (the product decay is
    added by the sparsifier instead)."""
    ms = [factors(m)[0] for m in layers.values()]
    if decay_factors:
        return [{"params": ms, "ham": False}]
    ws = [factors(m)[1] for m in layers.values()]
    return [{"params": ms, "ham": False, "weight_decay": 0.0}, {"params": ws, "weight_decay": 0.0}]


@torch.no_grad()
def folded_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """Plain state_dict (on CPU) with every parametrized tensor replaced by its effective value under its
    original key (`conv.weight`, not `conv.parametrizations.weight.original` / `...weight.0.m`).

    Reads `module.weight` in place of deep-copying the model and removing the parametrizations: a deep copy shares
    torch's injected Parametrized* class, and `remove_parametrizations` on the copy deletes the property from that
    shared class, which leaves the live model without `.weight`."""
    folded: dict[str, tuple[str, Tensor]] = {}
    for name, module in model.named_modules():
        if parametrize.is_parametrized(module):
            prefix = f"{name}." if name else ""
            for tensor_name in module.parametrizations:
                folded[f"{prefix}parametrizations.{tensor_name}."] = (prefix + tensor_name,
                                                                      getattr(module, tensor_name))
    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        hit = next((p for p in folded if key.startswith(p)), None)
        if hit is None:
            out[key] = value.detach().clone().cpu()
        elif folded[hit][0] not in out:
            out[folded[hit][0]] = folded[hit][1].detach().clone().cpu()
    return out


def effective_tracked_weights(layers: dict[str, nn.Module], managed: list[Tensor]) -> list[Tensor]:
    """Sparsifier.tracked_weights for parametrized layers: their effective weights (computed now, detached)
    followed by every managed tensor that is not one of their trainable originals."""
    from torch.nn.utils import parametrize

    originals = {id(m.parametrizations.weight.original) for m in layers.values()
                 if parametrize.is_parametrized(m, "weight")}
    with torch.no_grad():
        effective = [m.weight.detach() for m in layers.values()]
    return [*effective, *[p for p in managed if id(p) not in originals]]
