"""The dense m * w baseline (paper Fig. 2a, 76.56% on ResNet50/ImageNet).

Every prunable layer's weight becomes theta = m * w (ham.sparse.reparam, initialised with m^2 - w^2 = 1).
As in the paper (appendix D.2), m and w get NO plain weight decay (that would induce sparsity); instead the
product is decayed: wd/2 * sum((m w)^2) with `product_weight_decay` = 5e-5, added to the gradients of m and w in
before_step. HAM does not step m (its own parameter); it steps w like any weight unless ham=off.
"""

from __future__ import annotations

from typing import Any

from ham.sparse import reparam
from ham.sparse.base import Sparsifier


class MW(Sparsifier):
    name = "mw"

    def __init__(self, sparsity: float = 0.0, product_weight_decay: float = 5e-5, gamma: float = 1.0,
                 keep_first_dense: bool = False, keep_last_dense: bool = False):
        if sparsity != 0:
            raise ValueError("mw is a dense baseline: sparsifier.sparsity must be 0 (use signin for sparse m*w)")
        self.sparsity, self.product_weight_decay, self.gamma = 0.0, float(product_weight_decay), float(gamma)
        self.keep_first_dense, self.keep_last_dense = keep_first_dense, keep_last_dense
        self.model = self.optimizer = None

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        self.layers = reparam.reparameterize_layers(model, keep_first_dense=self.keep_first_dense,
                                                    keep_last_dense=self.keep_last_dense, gamma=self.gamma)

    def param_group_overrides(self) -> list[dict[str, Any]]:
        return reparam.product_param_groups(self.layers, decay_factors=False)

    def before_step(self, step: int) -> bool:
        if self.product_weight_decay:
            for module in self.layers.values():
                reparam.add_product_weight_decay_grad_(module, self.product_weight_decay)
        return True
