"""The base optimizers' declarations: typed options and the torch class each builds (ham/registry.py).
Torch-free. Every key except APP_KEYS is a keyword argument of the torch optimizer (lists become tuples)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from ham.errors import ConfigError
from ham.options import AUTO_BOOL, Component, opt
from ham.registry import declare

APP_KEYS = ("name", "no_weight_decay_1d", "fused", "sam")  # read by the param-group factory, not the optimizer


@dataclass
class SAMConfig:
    rho: float = opt(0.05, gt=0, doc="SAM neighbourhood radius")
    adaptive: bool = opt(False, doc="ASAM")


@dataclass
class OptimizerConfig(Component):
    name: str = opt()
    lr: float = opt(gt=0, doc="peak lr for the GLOBAL batch")
    weight_decay: float = opt(ge=0)
    no_weight_decay_1d: bool = opt(True, doc="no decay on biases and norm parameters")
    fused: Any = opt("auto", choices=AUTO_BOOL, doc="torch's fused SGD/AdamW kernels (auto: where supported)")
    sam: Optional[SAMConfig] = opt(None, doc="set by optimizer=sam")


@declare("optimizer", "sgd", build="torch.optim:SGD", label="SGD")
class SGDConfig(OptimizerConfig):
    """torch.optim.SGD with momentum."""
    momentum: float = opt(0.9, ge=0, lt=1)
    nesterov: bool = opt(False)


@declare("optimizer", "adamw", build="torch.optim:AdamW", label="AdamW")
class AdamWConfig(OptimizerConfig):
    """torch.optim.AdamW."""
    betas: List[float] = opt([0.9, 0.999], ge=0, lt=1, each=True)
    eps: float = opt(1e-8, gt=0)

    @classmethod
    def cross_check(cls, node, root, path):
        if len(node.betas) != 2:
            raise ConfigError(f"{path}.betas={list(node.betas)} is not allowed; it must be two numbers in [0, 1)")


@declare("optimizer", "adam", build="torch.optim:Adam", label="Adam")
class AdamConfig(OptimizerConfig):
    """torch.optim.Adam (L2 weight decay added to the gradient: Luo et al.'s node classification)."""
    betas: List[float] = opt([0.9, 0.999], ge=0, lt=1, each=True)
    eps: float = opt(1e-8, gt=0)

    @classmethod
    def cross_check(cls, node, root, path):
        AdamWConfig.cross_check(node, root, path)
