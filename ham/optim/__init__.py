"""The optimizer library. Names load lazily (PEP 562): ham.optim.options (the config declarations) is torch-free."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ham.lazy import lazy_names

__all__ = ["HAM", "SAM", "hyperbolic_step_"]
_LAZY = {"HAM": "ham.optim.ham", "SAM": "ham.optim.sam", "hyperbolic_step_": "ham.optim.functional"}

if TYPE_CHECKING:
    from ham.optim.functional import hyperbolic_step_
    from ham.optim.ham import HAM
    from ham.optim.sam import SAM


__getattr__ = lazy_names(__name__, _LAZY)
