"""Lemma 4.4 / Fig. 2(b) and Fig. 1: HAM's Bregman function R_alpha and inverse metrics.

With x0 = 0 the linear term of Lemma 4.4 vanishes and, per coordinate,
    R_alpha(x) = ((alpha |x| + 1) ln(alpha |x| + 1) - alpha |x|) / alpha^2,     R_alpha'' = 1 / (1 + alpha |x|).
Thm 4.6: R_alpha ~ x^2 / 2 as alpha -> 0 and ~ |x| log(alpha |x|) / alpha as alpha -> inf (an L1 shape).
Inverse metrics (Table 1): GD 1, m*w sqrt(x^2 + gamma^2), HAM 1 + alpha |x|.
"""

from __future__ import annotations

import torch


def r_alpha(x: torch.Tensor, alpha: float) -> torch.Tensor:
    a = alpha * x.abs()
    if alpha == 0:
        return 0.5 * x * x
    # log1p keeps the small-alpha limit accurate (the naive form cancels catastrophically)
    return ((a + 1) * torch.log1p(a) - a) / alpha**2


def normalized_r_alpha(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """R_alpha scaled to 1 at |x| = 1, so the shapes of different alphas can be compared (Fig. 2b)."""
    return r_alpha(x, alpha) / r_alpha(torch.ones((), dtype=x.dtype), alpha)


def inverse_metric_ham(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return 1 + alpha * x.abs()


def inverse_metric_mw(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return torch.sqrt(x * x + gamma**2)
