from ham.optim.functional import hyperbolic_step_
from ham.optim.ham import HAM

__all__ = ["HAM", "hyperbolic_step_"]
