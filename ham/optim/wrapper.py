"""Base for optimizers that wrap a built torch optimizer (HAM, SAM): the wrapper owns no param groups or state
of its own; `param_groups` and `state` ARE the base's (properties, because the base's load_state_dict replaces
its list), so LR schedulers, GradScaler and checkpoints see one optimizer."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch.optim import Optimizer


class OptimizerWrapper(Optimizer):
    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__} wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.base = optimizer
        self.defaults = optimizer.defaults
        # Optimizer.__init__ would rebuild param groups; only its hook bookkeeping is needed
        for attr in ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
                     "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks",
                     "_optimizer_load_state_dict_post_hooks"):
            setattr(self, attr, OrderedDict())
        self._patch_step_function()

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.base.param_groups

    @param_groups.setter
    def param_groups(self, value) -> None:
        self.base.param_groups = value

    @property
    def state(self):
        return self.base.state

    @state.setter
    def state(self, value) -> None:
        self.base.state = value

    def fill_group_defaults(self) -> None:
        """Subclasses: set their own per-group keys with setdefault (after every change of the groups)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.base.add_param_group(param_group)
        self.fill_group_defaults()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.base.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.base.load_state_dict(state_dict)
        self.fill_group_defaults()
