"""Hyperbolic Aware Minimization (HAM). ``from ham import HAM`` wraps any torch optimizer.

The optimizer names are loaded lazily (PEP 562), so ``import ham.config`` -- what ``train.py --help`` and every
config check use -- does not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ham.lazy import lazy_names

__all__ = ["HAM", "SAM", "hyperbolic_step_"]
__version__ = "0.1.0"

_LAZY = {"HAM": "ham.optim.ham", "SAM": "ham.optim.sam", "hyperbolic_step_": "ham.optim.functional"}

if TYPE_CHECKING:  # for type checkers and IDEs
    from ham.optim.functional import hyperbolic_step_
    from ham.optim.ham import HAM
    from ham.optim.sam import SAM


__getattr__ = lazy_names(__name__, _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
