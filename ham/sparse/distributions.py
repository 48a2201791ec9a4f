"""Layer-wise density distributions for a global sparsity target, with exact parameter counts.

uniform   every layer gets density 1 - s
erk       Erdos-Renyi-Kernel (RigL, Evci et al. 2020): density_l proportional to sum(shape_l) / prod(shape_l),
          scaled so the total matches; while the largest scaled density exceeds 1, the layer(s) with the largest
          raw density are made dense and the scale is solved again for the rest -- one layer at a time, as
          google-research/rigl's sparse_utils.get_sparsities_erdos_renyi does (densifying an over-full layer
          only lowers the scale, so this ends with the same dense set as densifying all over-full ones at once)
balanced  the same number of non-zeros in every layer (Gadhikar et al. 2023); a layer too small for its share
          is dense and the rest is shared by the others (same fix-up loop)
"""

from __future__ import annotations

import math


DISTRIBUTIONS = ("uniform", "erk", "balanced")


def layer_densities(shapes: dict[str, tuple[int, ...]], sparsity: float, distribution: str = "erk"
                    ) -> dict[str, float]:
    """Density (fraction kept) per layer with sum(density_l * size_l) = (1 - sparsity) * sum(size_l)."""
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution={distribution!r} is not known; allowed: "
                          f"{', '.join(DISTRIBUTIONS)}")
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total_keep = (1.0 - sparsity) * sum(sizes.values())
    if distribution == "uniform":
        return {n: 1.0 - sparsity for n in shapes}
    if distribution == "erk":
        raw = {n: sum(s) / math.prod(s) for n, s in shapes.items()}
    else:  # balanced: density_l * size_l equal  ->  raw density proportional to 1 / size_l
        raw = {n: 1.0 / sizes[n] for n in shapes}
    dense: set[str] = set()
    while True:
        budget = total_keep - sum(sizes[n] for n in dense)
        free = [n for n in shapes if n not in dense]
        if not free:
            break
        eps = budget / sum(raw[n] * sizes[n] for n in free)
        top = max(raw[n] for n in free)
        if eps * top <= 1.0:
            break
        dense.update(n for n in free if raw[n] == top)
    return {n: 1.0 if n in dense else eps * raw[n] for n in shapes}


def exact_counts(sizes: dict[str, int], densities: dict[str, float], sparsity: float) -> dict[str, int]:
    """Integer non-zero counts per layer summing to exactly round((1 - s) * total) (largest remainders)."""
    target = int(round((1.0 - sparsity) * sum(sizes.values())))
    want = {n: min(sizes[n], densities[n] * sizes[n]) for n in sizes}
    counts = {n: int(math.floor(v)) for n, v in want.items()}
    short = target - sum(counts.values())
    order = sorted(sizes, key=lambda n: (-(want[n] - counts[n]), n))
    for n in order:
        if short <= 0:
            break
        if counts[n] < sizes[n]:
            counts[n] += 1
            short -= 1
    return counts
