from ham.optim.functional import hyperbolic_step_
from ham.optim.ham import HAM
from ham.optim.sam import SAM

__all__ = ["HAM", "SAM", "hyperbolic_step_"]
