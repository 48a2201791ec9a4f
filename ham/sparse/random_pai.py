"""Random pruning at initialisation (PaI): masks drawn once at setup, then fixed ("Random", "Random + HAM")."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ham.sparse.distributions import exact_counts, layer_densities
from ham.sparse.masked import MaskedSparsifier


def random_masks(shapes: dict[str, tuple[int, ...]], sparsity: float, distribution: str, seed: int,
                 device=None) -> dict[str, Tensor]:
    """Uniformly random positions with exactly the distribution's count per layer; same on every rank (seeded)."""
    sizes = {n: int(torch.Size(s).numel()) for n, s in shapes.items()}
    counts = exact_counts(sizes, layer_densities(shapes, sparsity, distribution), sparsity)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for n in sorted(shapes):
        keep = torch.zeros(sizes[n], dtype=torch.bool)
        keep[torch.randperm(sizes[n], generator=g)[: counts[n]]] = True
        out[n] = keep.view(shapes[n]).to(device)
    return out


class RandomPaI(MaskedSparsifier):
    name = "random"

    def __init__(self, sparsity: float = 0.9, distribution: str = "erk", seed: int = 0,
                 keep_first_dense: bool = False, keep_last_dense: bool = False):
        super().__init__(sparsity, keep_first_dense, keep_last_dense)
        self.distribution, self.seed = distribution, int(seed)
        layer_densities({"x": (1, 1)}, 0.0, distribution)  # validate the name early

    def report(self) -> dict[str, Any]:
        """For summary.json: how the fixed masks were drawn, and each layer's density."""
        return {"distribution": self.distribution, "seed": self.seed,
                "layer_density": {n: float(m.float().mean()) for n, m in self.masks.items()}}

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        device = next(iter(self.weights().values())).device
        self.set_masks(random_masks(self.shapes(), self.sparsity, self.distribution, self.seed, device))
