"""Sign-In (Gadhikar, Jacobs, Zhou, Burkholz 2025, "Sign-In to the lottery"): theta = m * w with periodic resets,
on top of a mask source (the HAM paper's Table 3 rows "Random + Sign-In", "Ac/Dc + Sign-In", RiGL + Sign-In).

There is no public code; this follows the papers' text (HAM paper sections 1-2, appendix D.2, and the Sign-In
abstract/summary) and the derivation in ham.sparse.reparam:
- every prunable weight is theta = m * w (torch parametrization; model code untouched; the export folds it).
  Under gradient flow m^2 - w^2 = gamma is conserved; its effective learning-rate factor m^2 + w^2 =
  sqrt(gamma^2 + 4 theta^2) collapses near theta = 0 as weight decay shrinks gamma, which stalls sign flips.
  Sign-In's remedy: every `period` epochs (at on_epoch_start of epochs period, 2 period, ...; never at epoch 0)
  gamma is reset to 1 keeping theta: m = sqrt((1 + sqrt(1 + 4 theta^2)) / 2), w = theta / m.
- initialisation (our choice, the same formula): at setup every weight theta_0 is split with gamma = 1, so
  training starts exactly like a reset (m ~ 1 + theta^2/2, w ~ theta for small init weights).
- masks: `mask_source` = random | acdc | rigl is an inner sparsifier built through the registry with the same
  sparsity and the remaining options (distribution, seed, delta_t, ...); its hooks are delegated. It acts on w
  (the parametrization's trainable original), so theta = m * w is exactly 0 wherever w is masked, and the
  exported weights carry the source's exact count. The source ranks by |w| and reads dense grads of w
  (= m * dL/dtheta): after a reset m is a function of |theta| only and |w| = |theta| / m is increasing in |theta|,
  so magnitude ranks agree with theta's; pruned entries all share one m (see next point), so the gradient ranks
  used for regrowth agree too. Between resets this holds approximately.
- entries entering or leaving the mask: whenever the source changes its masks, every entry with w = 0 (pruned,
  or regrown at zero) is put in the balanced state of theta = 0, m = sqrt(1) = 1, with zeroed optimizer state
  for m there; otherwise weight decay on m would shrink it during the pruned time and a regrown weight would
  start with a collapsed learning rate.
- weight decay (`weight_decay_form`): "factors" (default) decays m and w separately with the optimizer's weight
  decay: the PILoT / Sign-In setting; wd/2 (m^2 + w^2) >= wd |theta| is the implicit L1 bias these methods rely
  on (the HAM paper, D.2, turns it off only for the DENSE m*w baseline, "as this induces sparsity").
  "product": m and w get no plain decay; wd/2 * sum(theta^2) with `product_weight_decay` is added to their grads
  (as the mw baseline does).
- optimizer state after a reset (`reset_momentum`, default true): all shaped state of m and w (momentum) is zeroed;
  it was accumulated in the old (m, w) coordinates, where the same step in theta means different steps in m, w.
- HAM: m is never stepped by HAM (override group ham=False); w is stepped like any weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ham.sparse import masks as M
from ham.sparse import reparam
from ham.sparse.base import Sparsifier

MASK_SOURCES = ("random", "acdc", "rigl")
WEIGHT_DECAY_FORMS = ("factors", "product")


class SignIn(Sparsifier):
    name = "signin"

    def __init__(self, sparsity: float = 0.9, mask_source: str = "random", period: int = 10,
                 weight_decay_form: str = "factors", product_weight_decay: float = 5e-5,
                 reset_momentum: bool = True, keep_first_dense: bool = False, keep_last_dense: bool = False,
                 **source_options):
        from ham.sparse.registry import build_sparsifier

        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source={mask_source!r} is not allowed; allowed: "
                              f"{', '.join(MASK_SOURCES)}")
        if weight_decay_form not in WEIGHT_DECAY_FORMS:
            raise ValueError(f"weight_decay_form={weight_decay_form!r} is not allowed; allowed: "
                              f"{', '.join(WEIGHT_DECAY_FORMS)}")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"period={period!r} is not allowed; it must be an integer >= 1 "
                              f"(epochs between resets)")
        if float(product_weight_decay) < 0:
            raise ValueError(f"product_weight_decay={product_weight_decay!r} is not allowed; "
                              f"it must be >= 0")
        self.sparsity, self.period, self.mask_source = float(sparsity), int(period), mask_source
        self.weight_decay_form, self.product_weight_decay = weight_decay_form, float(product_weight_decay)
        self.reset_momentum = bool(reset_momentum)
        self.keep_first_dense, self.keep_last_dense = bool(keep_first_dense), bool(keep_last_dense)
        self.source = build_sparsifier(mask_source, sparsity=sparsity, keep_first_dense=keep_first_dense,
                                       keep_last_dense=keep_last_dense, **source_options)
        self.resets: list[int] = []
        self._seen_masks: Any = None
        self.model = self.optimizer = None

    # -- setup
    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        self.layers = reparam.reparameterize_layers(model, keep_first_dense=self.keep_first_dense,
                                                    keep_last_dense=self.keep_last_dense)
        self.source.setup(model, schedule)  # masks act on w, the parametrization's original
        self._sync_zeros()

    def param_group_overrides(self) -> list[dict[str, Any]]:
        return reparam.product_param_groups(self.layers, decay_factors=self.weight_decay_form == "factors")

    def attach_optimizer(self, optimizer) -> None:
        super().attach_optimizer(optimizer)
        self.source.attach_optimizer(optimizer)

    def factors(self) -> list[torch.nn.Parameter]:
        return [p for module in self.layers.values() for p in reparam.factors(module)]

    # -- hooks
    @torch.no_grad()
    def on_epoch_start(self, epoch: int) -> None:
        if epoch > 0 and epoch % self.period == 0:
            self.reset()
            self.resets.append(epoch)
        # after the reset: a compression at this epoch then ranks |w|, which is increasing in |theta| right now
        self.source.on_epoch_start(epoch)
        self._sync_zeros()

    @torch.no_grad()
    def reset(self) -> None:
        """gamma := 1 keeping theta (zeros of w stay exactly zero); momentum of m and w zeroed (reset_momentum)."""
        for module in self.layers.values():
            reparam.rebalance_(module, 1.0)
        if self.reset_momentum:
            M.reset_optimizer_state_(self.optimizer, self.factors())
        masks = getattr(self.source, "masks", None)
        if masks:
            M.apply_masks_(masks, self.source.weights())

    def mask_gradients(self) -> None:
        self.source.mask_gradients()

    def skips_update(self, step: int) -> bool:
        return self.source.skips_update(step)

    def before_step(self, step: int) -> bool:
        if self.weight_decay_form == "product":
            for module in self.layers.values():
                reparam.add_product_weight_decay_grad_(module, self.product_weight_decay)
        do_step = self.source.before_step(step)  # masks grads of w (RiGL: may update masks, skip the step)
        self._sync_zeros()
        return do_step

    def after_step(self, step: int) -> None:
        self.source.after_step(step)
        self._sync_zeros()

    @torch.no_grad()
    def _sync_zeros(self) -> None:
        """After a mask change: theta = 0 entries go to the balanced state m = 1 (fresh optimizer state for m)."""
        masks = getattr(self.source, "masks", None)
        if masks is self._seen_masks:
            return
        self._seen_masks = masks
        for module in self.layers.values():
            zero = reparam.rebalance_zeros_(module, 1.0)
            m = reparam.factors(module)[0]
            M.mask_optimizer_state_(self.optimizer, m, ~zero)

    def tracked_weights(self, managed: list[Tensor]) -> list[Tensor]:
        return reparam.effective_tracked_weights(self.layers, managed)

    def export_state_dict(self, model: nn.Module) -> dict[str, Tensor]:
        """Effective weights under the original keys (parametrizations folded; the live model stays intact)."""
        return reparam.folded_state_dict(model)

    # -- reporting and state (m and w live in the model's state_dict)
    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"signin_resets": list(self.resets), "mask_source": self.mask_source}
        inner = getattr(self.source, "report", None)
        if callable(inner):
            out["source"] = inner()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source.state_dict(), "resets": list(self.resets)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state["source"])
        self.resets = [int(e) for e in state.get("resets", [])]
        self._seen_masks = getattr(self.source, "masks", None)  # the loaded m already reflects these masks
