"""The optimizer library. Names load lazily (PEP 562): ham.optim.options (the config declarations) is torch-free."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = ["HAM", "SAM", "hyperbolic_step_"]
_LAZY = {"HAM": "ham.optim.ham", "SAM": "ham.optim.sam", "hyperbolic_step_": "ham.optim.functional"}

if TYPE_CHECKING:
    from ham.optim.functional import hyperbolic_step_
    from ham.optim.ham import HAM
    from ham.optim.sam import SAM


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ham.optim' has no attribute {name!r}")
