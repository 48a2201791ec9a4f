"""Sign-In (Gadhikar, Jacobs, Zhou, Burkholz 2025, "Sign-In to the lottery"): m * w with periodic resets.

No public code exists; this follows the paper text (see docs in README "Sparsifiers"):
- every unmasked weight is theta = m * w (ham.sparse.reparam); under gradient flow m^2 - w^2 = gamma is
  conserved and shrinks the effective learning rate near zero; every `period` epochs gamma is reset to 1 keeping
  theta fixed: m = sqrt((1 + sqrt(1 + 4 theta^2)) / 2), w = theta / m. The first reset happens at epoch `period`.
- masks come from a mask source (`mask_source`: random | acdc | rigl, the Table 3 rows "+ Sign-In"), built with
  the same sparsity and options and acting on w (theta = m w is zero wherever w is masked). The mask source sees
  w where it would see theta: magnitudes and gradients differ by the factor m >= 1 (monotone in |theta| right
  after a reset); we accept that approximation.
- weight decay (`weight_decay_form`): "factors" (default) decays m and w separately, the PILoT/Sign-In setting
  whose implicit L1 bias on theta is the point of the method; "product" decays theta^2 like the m*w baseline.
- after a reset the optimizer state (momentum) of m and w is zeroed: it refers to the old coordinates.
"""

from __future__ import annotations

from typing import Any

import torch

from ham.sparse import masks as M
from ham.sparse import reparam
from ham.sparse.base import Sparsifier

MASK_SOURCES = ("random", "acdc", "rigl")


class SignIn(Sparsifier):
    name = "signin"

    def __init__(self, sparsity: float = 0.9, mask_source: str = "random", period: int = 10,
                 weight_decay_form: str = "factors", product_weight_decay: float = 5e-5,
                 keep_first_dense: bool = False, keep_last_dense: bool = False, **source_options):
        from ham.sparse.registry import build_sparsifier

        if mask_source not in MASK_SOURCES:
            raise ValueError(f"sparsifier.mask_source={mask_source!r} is not allowed; allowed: "
                             f"{', '.join(MASK_SOURCES)}")
        if weight_decay_form not in ("factors", "product"):
            raise ValueError("sparsifier.weight_decay_form must be factors or product")
        if int(period) < 1:
            raise ValueError("sparsifier.period must be >= 1 (epochs between resets)")
        self.sparsity, self.period = float(sparsity), int(period)
        self.weight_decay_form, self.product_weight_decay = weight_decay_form, float(product_weight_decay)
        self.keep_first_dense, self.keep_last_dense = keep_first_dense, keep_last_dense
        self.source = build_sparsifier(mask_source, sparsity=sparsity, keep_first_dense=keep_first_dense,
                                       keep_last_dense=keep_last_dense, **source_options)
        self.resets: list[int] = []
        self.model = self.optimizer = None

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        self.layers = reparam.reparameterize_layers(model, keep_first_dense=self.keep_first_dense,
                                                    keep_last_dense=self.keep_last_dense)
        self.source.setup(model, schedule)  # masks act on w, the parametrization's original

    def param_group_overrides(self) -> list[dict[str, Any]]:
        return reparam.product_param_groups(self.layers, decay_factors=self.weight_decay_form == "factors")

    def attach_optimizer(self, optimizer) -> None:
        super().attach_optimizer(optimizer)
        self.source.attach_optimizer(optimizer)

    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        self.source.on_epoch_start(epoch)
        if epoch > 0 and epoch % self.period == 0:
            for module in self.layers.values():
                reparam.rebalance_(module)
            M.reset_optimizer_state_(self.optimizer, [p for mod in self.layers.values()
                                                      for p in reparam.factors(mod)])
            self.source.after_step(-1)  # re-apply masks (w = theta / m keeps zeros, this makes it certain)
            self.resets.append(epoch)

    def mask_gradients(self) -> None:
        self.source.mask_gradients()

    def before_step(self, step: int) -> bool:
        if self.weight_decay_form == "product" and self.product_weight_decay:
            for module in self.layers.values():
                reparam.add_product_weight_decay_grad_(module, self.product_weight_decay)
        return self.source.before_step(step)

    def after_step(self, step: int) -> None:
        self.source.after_step(step)

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "resets": list(self.resets)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self.resets = [int(e) for e in state.get("resets", [])]
