"""Hyperbolic Aware Minimization (HAM). ``from ham import HAM`` wraps any torch optimizer."""

from ham.optim import HAM, hyperbolic_step_

__all__ = ["HAM", "hyperbolic_step_"]
__version__ = "0.1.0"
