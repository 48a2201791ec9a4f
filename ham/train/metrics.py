"""Training metrics for log steps (each costs one host sync; the hot loop never waits on the device).

    SignTracker      sign flips since the previous log and since init (Fig. 2a); 2 bits per weight per snapshot
    l1_norm          mean |w| over the tracked weights (Fig. 4, "average L1 norm")
    sparsity         fraction of exact zeros, global and per layer
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

# --------------------------------------------------------------------------------------------------- bit packing
# A snapshot of signs is two bit planes, "w > 0" and "w < 0" (zero = neither), packed 8 weights per byte. Flip
# counts are popcounts of bitwise ANDs of planes, so nothing is ever unpacked. Bit order inside a byte depends on
# the machine's endianness, which is harmless: planes are only ever combined with planes packed the same way.

_M1, _M2, _M4 = 0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F


def _pack_bits(mask: Tensor) -> Tensor:
    """Bool tensor (any shape) -> uint8 tensor of ceil(n/64)*8 bytes, 8 flags per byte, zero padded."""
    flat = mask.reshape(-1)
    pad = -flat.numel() % 64
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    # view each run of 8 flags (bytes 0/1) as one int64 and fold the 8 bits into its low byte. Byte j's flag sits
    # at bit 8j; the word's top bit is always 0, so the arithmetic right shifts never drag in sign bits.
    w = flat.view(torch.uint8).view(torch.int64)
    w = w | (w >> 7)
    w = w | (w >> 14)
    w = w | (w >> 28)
    return (w & 0xFF).to(torch.uint8)


def _popcount(packed: Tensor) -> Tensor:
    """Number of set bits in a uint8 tensor whose length is a multiple of 8 (0-dim int64 tensor, no sync)."""
    x = packed.view(torch.int64)
    x = x - ((x >> 1) & _M1)  # SWAR popcount; masks clear the sign-extended bits of the arithmetic shifts
    x = (x & _M2) + ((x >> 2) & _M2)
    x = (x + (x >> 4)) & _M4  # 8 byte counts <= 8 each; the word is now non-negative
    x = x + (x >> 8)
    x = x + (x >> 16)
    x = x + (x >> 32)
    return (x & 0x7F).sum()


class SignTracker:
    """Fraction of weights whose sign flipped since the previous `update()` and since initialisation.

    Flip definition: sign(before) * sign(now) < 0, i.e. + -> - or - -> +. A weight that becomes exactly zero
    (pruning, underflow) or comes back from zero is NOT a flip. Rates are normalised by the weights that CAN flip:
    non-zero both in the reference snapshot and now (a pruned weight never counts, in the numerator or the
    denominator), so rates are comparable across sparsities. The weights are the EFFECTIVE ones the model computes
    with (`weights` may be a callable returning them at each call: masked W, STR's thresholded W, theta = m * w).

    Memory: each snapshot (init, previous log) is two packed bit planes = 2 bits = 0.25 byte per weight;
    0.5 byte per weight for both, on the weights' device. Work happens only in `update()` (call it at log steps):
    two comparisons per weight plus bit-level work on the packed planes, and one host sync.
    Under DDP the weights are identical on every rank, so no communication is needed.
    """

    def __init__(self, weights: Callable[[], Sequence[Tensor]] | Sequence[Tensor]):
        self.weights = weights if callable(weights) else (lambda fixed=list(weights): fixed)
        params = list(self.weights())
        self.numels = [p.numel() for p in params]
        self.numel = sum(self.numels)
        self.device = params[0].device if params else torch.device("cpu")
        self.init = self._snapshot(params)  # (pos_plane, neg_plane)
        self.prev = (self.init[0].clone(), self.init[1].clone())

    @torch.no_grad()
    def _snapshot(self, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        if not params:
            return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.uint8)
        pos = torch.cat([_pack_bits(p.detach() > 0).to(self.device) for p in params])
        neg = torch.cat([_pack_bits(p.detach() < 0).to(self.device) for p in params])
        return pos, neg

    def snapshot_nbytes(self) -> int:
        """Bytes held by the two stored snapshots together (about numel / 2)."""
        return sum(t.numel() * t.element_size() for t in (*self.init, *self.prev))

    @torch.no_grad()
    def update(self) -> dict[str, float]:
        if not self.numel:
            return {"train/sign_flips": 0.0, "train/sign_flips_init": 0.0}
        pos, neg = self._snapshot(list(self.weights()))
        nonzero = pos | neg
        counts = torch.stack([
            _popcount((self.prev[0] & neg) | (self.prev[1] & pos)),
            _popcount((self.prev[0] | self.prev[1]) & nonzero),
            _popcount((self.init[0] & neg) | (self.init[1] & pos)),
            _popcount((self.init[0] | self.init[1]) & nonzero),
        ]).tolist()
        self.prev = (pos, neg)
        return {"train/sign_flips": counts[0] / max(1, counts[1]),
                "train/sign_flips_init": counts[2] / max(1, counts[3])}

    def state_dict(self) -> dict[str, Any]:
        """CPU uint8 tensors and a list of ints: loads with torch.load(weights_only=True)."""
        return {"numels": list(self.numels), "init_pos": self.init[0].cpu(),
                "init_neg": self.init[1].cpu(), "prev_pos": self.prev[0].cpu(), "prev_neg": self.prev[1].cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "init" in state:  # older checkpoints: one int8 sign tensor per parameter, two lists
            state = self._from_int8_lists(state)
        numels = [int(n) for n in state["numels"]]
        if numels != self.numels:  # packed planes are laid out tensor by tensor
            raise ValueError(f"sign tracker state covers {len(numels)} tensors / {sum(numels)} weights; this "
                             f"tracker tracks {len(self.numels)} / {self.numel} (different model or HAM "
                             f"parameter selection?)")
        self.init = (state["init_pos"].to(self.device, torch.uint8), state["init_neg"].to(self.device, torch.uint8))
        self.prev = (state["prev_pos"].to(self.device, torch.uint8), state["prev_neg"].to(self.device, torch.uint8))

    def _from_int8_lists(self, state: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {"numels": [s.numel() for s in state["init"]]}
        for key in ("init", "prev"):
            empty = [torch.zeros(0, dtype=torch.uint8)]  # torch.cat needs at least one tensor
            out[f"{key}_pos"] = torch.cat([_pack_bits(s > 0) for s in state[key]] or empty)
            out[f"{key}_neg"] = torch.cat([_pack_bits(s < 0) for s in state[key]] or empty)
        return out


# --------------------------------------------------------------------------------------------------- weights
@torch.no_grad()
def l1_norm(params: Iterable[Tensor]) -> float:
    """Mean |w| over the given tensors (the paper's "average L1 norm", Fig. 4); one host sync.

    Per-tensor sums accumulate in float32 (fast on every device), the cross-tensor sum in float64."""
    params = list(params)
    if not params:
        return 0.0
    sums = torch.stack([torch.linalg.vector_norm(p.detach(), 1, dtype=torch.float32).to(torch.float64)
                        for p in params])
    return float(sums.sum().item()) / sum(p.numel() for p in params)


@torch.no_grad()
def sparsity(params: Mapping[str, Tensor] | Sequence[Tensor]) -> dict[str, Any]:
    """{"global": fraction of exact zeros over all given tensors, "layers": {name: fraction}}; one host sync.

    Pass a {name: tensor} mapping for per-layer names; a plain sequence is named "0", "1", ..."""
    named = dict(params) if isinstance(params, Mapping) else {str(i): p for i, p in enumerate(params)}
    if not named:
        return {"global": 0.0, "layers": {}}
    sizes = [t.numel() for t in named.values()]
    zeros = torch.stack([(t.detach() == 0).sum() for t in named.values()]).tolist()
    return {"global": sum(zeros) / max(1, sum(sizes)),
            "layers": {n: z / max(1, s) for n, z, s in zip(named, zeros, sizes)}}
