"""The sparsifiers' schedules, as plain arithmetic on steps and epochs (stdlib only: the config schema checks
them without importing torch, and the sparsifiers run them).

    acdc_phase_epochs   Ac/Dc: the epochs at whose start a compressed / a dense phase begins
    cubic_budget        STR's budget mode: the target sparsity after a step (Zhu & Gupta's gradual-pruning curve)
    drop_fraction_at    RigL: the fraction of active weights dropped at a mask update (cosine decay)
"""

from __future__ import annotations

import math


# ------------------------------------------------------------------ Ac/Dc
def acdc_boundary(fraction: float, epochs: int) -> int:
    return int(math.floor(fraction * epochs + 0.5 + 1e-9))  # round half up, robust to float noise


def acdc_phase_epochs(epochs: int, *, warmup_fraction: float = 0.1, phase_fraction: float = 0.05,
                      last_dense_fraction: float = 0.75, final_fraction: float = 0.85
                      ) -> tuple[list[int], list[int]]:
    """(compress_epochs, decompress_epochs): epochs at whose start a phase begins. Each boundary is its own
    fraction of training rounded half up, so phases stay ~equal when epochs is not a multiple of 20."""
    compress, decompress = [], []
    i = 0
    while warmup_fraction + 2 * i * phase_fraction < last_dense_fraction - 1e-9:
        start = warmup_fraction + 2 * i * phase_fraction
        compress.append(acdc_boundary(start, epochs))
        decompress.append(acdc_boundary(min(start + phase_fraction, last_dense_fraction), epochs))
        i += 1
    if not decompress or decompress[-1] != acdc_boundary(last_dense_fraction, epochs):
        decompress.append(acdc_boundary(last_dense_fraction, epochs))
    compress.append(acdc_boundary(final_fraction, epochs))
    return compress, decompress


def acdc_schedule_fits(compress: list[int], decompress: list[int], epochs: int) -> bool:
    """Phases alternate strictly inside the run, starting with a compression."""
    events = sorted([(e, "c") for e in compress] + [(e, "d") for e in decompress])
    ok = len({e for e, _ in events}) == len(events) and all(0 <= e < epochs for e, _ in events)
    return bool(ok and events and events[0][1] == "c" and all(a[1] != b[1] for a, b in zip(events, events[1:])))


# ------------------------------------------------------------------ STR (budget mode)
def cubic_budget(step: int, *, sparsity: float, total_steps: int, start_fraction: float,
                 end_fraction: float) -> float:
    """Target sparsity after optimizer step `step` (0-based): 0 until start_fraction of training, then
    sparsity * (1 - (1 - p)^3) with p rising linearly to 1 at end_fraction, then `sparsity`."""
    total = max(1, total_steps)
    t0, t1 = start_fraction * total, end_fraction * total
    p = min(1.0, max(0.0, (step + 1 - t0) / max(1e-9, t1 - t0)))
    return sparsity * (1.0 - (1.0 - p) ** 3)


# ------------------------------------------------------------------ RigL
def drop_fraction_at(step: int, *, drop_fraction: float, t_end: int) -> float:
    """a_t = a/2 (1 + cos(pi t / t_end)): the fraction of each layer's active weights a mask update replaces."""
    return drop_fraction / 2 * (1 + math.cos(math.pi * step / t_end))
