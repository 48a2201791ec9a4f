"""The dense m * w baseline (HAM paper Fig. 2a, 76.56% top-1 on ResNet50/ImageNet).

Every prunable layer's weight becomes theta = m * w (ham.sparse.reparam; a torch parametrization, exported folded
under the original keys).
- Initialisation (`gamma`, default 1): the pair with m * w = theta_0 and m^2 - w^2 = gamma,
  m = sqrt((gamma + sqrt(gamma^2 + 4 theta_0^2)) / 2), w = theta_0 / m: the Sign-In balance, whose
  effective learning-rate factor m^2 + w^2 = sqrt(gamma^2 + 4 theta^2) is ~1 at typical init scales, so the
  baseline starts out like plain training. gamma = 0 is the "m = sqrt|x|, w = sign(x) sqrt|x|" initialisation of
  the HAM paper's Theorem 3.1 (pure hyperbolic flow; weights near 0 then barely move): available, not default.
- Regulariser, as in appendix D.2: "not regularized with weight decay for the dense scenario, as this induces
  sparsity. Instead, weight decay is applied on the product (m*w)^2 with strength 5e-5". Exactly:
      R(m, w) = wd/2 * sum((m * w)^2),   wd = `product_weight_decay` (default 5e-5),
      dR/dm = wd * m * w^2,   dR/dw = wd * m^2 * w,
  added to m.grad and w.grad in before_step (so it enters momentum like SGD's coupled weight_decay, which is
  the gradient of wd/2 * x^2). m and w sit in override groups with weight_decay = 0; the loop is untouched.
  (With AdamW the added gradient is normalised like any gradient: a coupled, not decoupled, decay.)
- HAM: m is never stepped by HAM (ham=False); w is stepped like any weight if HAM is on.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ham.sparse import reparam
from ham.sparse.base import Sparsifier


class MW(Sparsifier):
    name = "mw"

    def __init__(self, sparsity: float = 0.0, product_weight_decay: float = 5e-5, gamma: float = 1.0,
                 keep_first_dense: bool = False, keep_last_dense: bool = False):
        if sparsity != 0:
            raise ValueError(f"sparsity={sparsity!r} is not allowed for sparsifier=mw (a dense "
                              f"baseline); allowed: 0 (use sparsifier=signin for sparse m*w)")
        if float(product_weight_decay) < 0:
            raise ValueError(f"product_weight_decay={product_weight_decay!r} is not allowed; "
                              f"it must be >= 0")
        if float(gamma) < 0:
            raise ValueError(f"gamma={gamma!r} is not allowed; it must be >= 0 (m^2 - w^2 at init)")
        self.sparsity, self.product_weight_decay, self.gamma = 0.0, float(product_weight_decay), float(gamma)
        self.keep_first_dense, self.keep_last_dense = bool(keep_first_dense), bool(keep_last_dense)
        self.model = self.optimizer = None

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        self.layers = reparam.reparameterize_layers(model, keep_first_dense=self.keep_first_dense,
                                                    keep_last_dense=self.keep_last_dense, gamma=self.gamma)

    def param_group_overrides(self) -> list[dict[str, Any]]:
        return reparam.product_param_groups(self.layers, decay_factors=False)

    def before_step(self, step: int) -> bool:
        for module in self.layers.values():
            reparam.add_product_weight_decay_grad_(module, self.product_weight_decay)
        return True

    def tracked_weights(self, managed: list[Tensor]) -> list[Tensor]:
        return reparam.effective_tracked_weights(self.layers, managed)

    def export_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """Effective weights m * w under the original keys (the live model stays intact)."""
        return reparam.folded_state_dict(model)
