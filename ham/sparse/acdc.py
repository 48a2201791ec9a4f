"""Ac/Dc (Peste et al. 2021, IST-DASLab/ACDC): alternating compressed / decompressed training.

Schedule for the reference 100-epoch ResNet50 run: dense warm-up epochs 0-9; compressed phases start at epochs
10, 20, ..., 70 and decompressed phases at 15, 25, ..., 65 and 75 (5-epoch alternation); a last dense phase 75-84;
the final compressed phase 85-99. We express it in fractions of training so it scales (200 epochs, CIFAR's 150):
warm-up `warmup_fraction` = 0.1, phase length `phase_fraction` = 0.05, last decompression at
`last_dense_fraction` = 0.75, final compression at `final_fraction` = 0.85. Boundary epochs are
floor(fraction * epochs + 0.5). `compress_epochs` / `decompress_epochs` override with explicit lists.

Rounding rule: every boundary is its own fraction of training, rounded half up: epoch = floor(f * epochs + 0.5).
100 epochs -> compress [10, 20, 30, 40, 50, 60, 70, 85], decompress [15, 25, 35, 45, 55, 65, 75] (the reference's
pruner epochs [10, 10, 71] + [85, 20, 100] and RestoreWeights epochs [15, 10, 66] + [75, 20, 86]); 200 epochs ->
the same lists doubled; 150 epochs -> compress [15, 30, 45, 60, 75, 90, 105, 128], decompress [23, 38, 53, 68, 83,
98, 113]. (The reference's own CIFAR-100 recipe is a different shape -- 20-epoch phases, compress 10, 50, ...,
170 -- set it with the explicit lists if wanted.)

Compression (reference: UnstructuredMagnitudePruner, one percentile over the concatenation of all modules'
weights): one GLOBAL magnitude threshold over all prunable layers, hit at once and exactly (top-k, ties by
index). While compressed, pruned weights, their gradients and their optimizer state are zero.
Decompression (reference: RestoreWeights, "the pruned weights are reintroduced as zeros"): the mask becomes all
ones and the pruned weights restart from zero. Momentum: the reference's ImageNet scripts pass
--reset_momentum_after_recycling, which calls SGD.reset_momentum_buffer() -- zero the momentum_buffer of EVERY
parameter of the optimizer (biases and BN too, not only the pruned entries) -- at the first optimizer step after
each decompression. `reset_momentum="all"` (default) does exactly that at the phase change (no step happens in
between, so it is the same); "pruned_layers" limits it to the prunable weights, "none" keeps momentum. Compression
phases do not reset momentum (the reference only zeroes the pruned entries implicitly; we zero their state).
"""

from __future__ import annotations

from typing import Any

from ham.sparse import masks as M
from ham.sparse.masked import MaskedSparsifier
from ham.sparse.schedules import acdc_phase_epochs, acdc_schedule_fits

RESET_MOMENTUM = ("all", "pruned_layers", "none")


def check_schedule(compress: list[int], decompress: list[int], epochs: int) -> None:
    """Phases must alternate strictly inside the run (e.g. enough epochs); ValueError otherwise."""
    if not acdc_schedule_fits(compress, decompress, epochs):
        raise ValueError(f"the Ac/Dc phase schedule does not fit epochs={epochs} (compress at {compress}, "
                         f"decompress at {decompress}); use at least 20 epochs with the default fractions, or "
                         f"explicit compress_epochs/decompress_epochs")


class AcDc(MaskedSparsifier):
    name = "acdc"

    def __init__(self, sparsity: float = 0.9, warmup_fraction: float = 0.1, phase_fraction: float = 0.05,
                 last_dense_fraction: float = 0.75, final_fraction: float = 0.85,
                 compress_epochs: list[int] | None = None, decompress_epochs: list[int] | None = None,
                 reset_momentum: str = "all", keep_first_dense: bool = False, keep_last_dense: bool = False):
        super().__init__(sparsity, keep_first_dense, keep_last_dense)
        if reset_momentum not in RESET_MOMENTUM:
            raise ValueError(f"reset_momentum={reset_momentum!r} is not known; allowed: "
                              f"{', '.join(RESET_MOMENTUM)}")
        for key, f in (("warmup_fraction", warmup_fraction), ("phase_fraction", phase_fraction),
                       ("last_dense_fraction", last_dense_fraction), ("final_fraction", final_fraction)):
            if not isinstance(f, (int, float)) or isinstance(f, bool) or not 0 <= f < 1 or (
                    key == "phase_fraction" and f == 0):
                raise ValueError(f"{key}={f!r} is not allowed; it must be a number in "
                                  f"{'(0, 1)' if key == 'phase_fraction' else '[0, 1)'}")
        self.fractions = dict(warmup_fraction=warmup_fraction, phase_fraction=phase_fraction,
                              last_dense_fraction=last_dense_fraction, final_fraction=final_fraction)
        self.explicit = (compress_epochs, decompress_epochs)
        self.reset_momentum = reset_momentum
        self.compressed = False
        self.last_epoch = -1  # the last epoch whose start was handled: a repeated call is a no-op
        self.events: list[tuple[int, str]] = []  # (epoch, "compress"/"decompress"), for logs and tests

    def setup(self, model, schedule) -> None:
        super().setup(model, schedule)
        c, d = acdc_phase_epochs(schedule.epochs, **self.fractions)
        self.compress_epochs = list(self.explicit[0]) if self.explicit[0] is not None else c
        self.decompress_epochs = list(self.explicit[1]) if self.explicit[1] is not None else d
        check_schedule(self.compress_epochs, self.decompress_epochs, schedule.epochs)

    def phase_at(self, epoch: int) -> str:
        """"dense" or "compressed" during `epoch` (from the schedule alone)."""
        events = sorted([(e, "compressed") for e in self.compress_epochs] +
                        [(e, "dense") for e in self.decompress_epochs])
        phase = "dense"
        for e, kind in events:
            if e <= epoch:
                phase = kind
        return phase

    def on_epoch_start(self, epoch: int) -> None:
        if epoch == self.last_epoch:
            return
        self.last_epoch = epoch
        if epoch in self.compress_epochs:
            self.set_masks(M.global_magnitude_masks(self.weights(), self.sparsity))
            self.compressed = True
            self.events.append((epoch, "compress"))
        elif epoch in self.decompress_epochs and self.compressed:
            # all ones again: pruned weights restart from their zero value (they are zero already)
            self.clear_masks()
            self.compressed = False
            if self.reset_momentum == "all":
                M.reset_momentum_(self.optimizer)
            elif self.reset_momentum == "pruned_layers":
                M.reset_momentum_(self.optimizer, self.weights().values())
            self.events.append((epoch, "decompress"))

    def report(self) -> dict[str, Any]:
        """For summary.json: the schedule actually used and what happened."""
        return {"compress_epochs": list(self.compress_epochs), "decompress_epochs": list(self.decompress_epochs),
                "reset_momentum": self.reset_momentum, "events": [[e, k] for e, k in self.events]}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "compressed": self.compressed, "last_epoch": self.last_epoch,
                "events": [[e, k] for e, k in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.compressed = bool(state["compressed"])
        self.last_epoch = int(state.get("last_epoch", -1))
        self.events = [(int(e), str(k)) for e, k in state.get("events", [])]
