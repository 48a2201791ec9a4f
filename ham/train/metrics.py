"""Training and evaluation metrics, built so the hot loop never waits on the device.

Everything here either accumulates on the device without a host sync (RunningMean.add, EvalAccumulator.add,
accuracy_topk) or is meant for log steps only and costs one host sync (l1_norm, sparsity, SignTracker.update,
RunningMean.compute, EvalAccumulator.compute).

    SignTracker      sign flips since the previous log and since init (Fig. 2a); 2 bits per weight per snapshot
    l1_norm          mean |w| over the tracked weights (Fig. 4, "average L1 norm")
    sparsity         fraction of exact zeros, global and per layer
    Throughput       images/s over the last log interval, warmup and paused sections excluded
    RunningMean      train loss mean over the log interval (device-side sums)
    accuracy_topk    top-k hit counts of a batch
    EvalAccumulator  loss/top-k sums over a validation pass, all-reduced over DDP ranks
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
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
    (pruning, underflow) or comes back from zero is NOT a flip; a weight going + -> 0 -> - across two logs is
    therefore not a flip against the previous log but is one against init. Fractions are over ALL tracked weights,
    zeros included (so pruning lowers the attainable flip fraction rather than renormalising it).

    Memory: each snapshot (init, previous log) is two packed bit planes = 2 bits = 0.25 byte per weight;
    0.5 byte per weight for both, on the weights' device. Work happens only in `update()` (call it at log steps):
    two comparisons per weight plus bit-level work on the packed planes, and one host sync.
    Under DDP the weights are identical on every rank, so no communication is needed.
    """

    def __init__(self, params: Sequence[Tensor]):
        self.params = list(params)
        self.numel = sum(p.numel() for p in self.params)
        self.device = self.params[0].device if self.params else torch.device("cpu")
        self.init = self._snapshot()  # (pos_plane, neg_plane)
        self.prev = (self.init[0].clone(), self.init[1].clone())

    @torch.no_grad()
    def _snapshot(self) -> tuple[Tensor, Tensor]:
        if not self.params:
            return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.uint8)
        pos = torch.cat([_pack_bits(p.detach() > 0).to(self.device) for p in self.params])
        neg = torch.cat([_pack_bits(p.detach() < 0).to(self.device) for p in self.params])
        return pos, neg

    def snapshot_nbytes(self) -> int:
        """Bytes held by the two stored snapshots together (about numel / 2)."""
        return sum(t.numel() * t.element_size() for t in (*self.init, *self.prev))

    @torch.no_grad()
    def update(self) -> dict[str, float]:
        if not self.numel:
            return {"train/sign_flips": 0.0, "train/sign_flips_init": 0.0}
        pos, neg = self._snapshot()
        counts = torch.stack([
            _popcount((self.prev[0] & neg) | (self.prev[1] & pos)),
            _popcount((self.init[0] & neg) | (self.init[1] & pos)),
        ]).tolist()
        self.prev = (pos, neg)
        return {"train/sign_flips": counts[0] / self.numel, "train/sign_flips_init": counts[1] / self.numel}

    def state_dict(self) -> dict[str, Any]:
        """CPU uint8 tensors and a list of ints: loads with torch.load(weights_only=True)."""
        return {"numels": [p.numel() for p in self.params], "init_pos": self.init[0].cpu(),
                "init_neg": self.init[1].cpu(), "prev_pos": self.prev[0].cpu(), "prev_neg": self.prev[1].cpu()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "init" in state:  # older checkpoints: one int8 sign tensor per parameter, two lists
            state = self._from_int8_lists(state)
        numels = [int(n) for n in state["numels"]]
        if numels != [p.numel() for p in self.params]:  # packed planes are laid out tensor by tensor
            raise ValueError(f"sign tracker state covers {len(numels)} tensors / {sum(numels)} weights; this "
                             f"tracker tracks {len(self.params)} / {self.numel} (different model or HAM "
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


# --------------------------------------------------------------------------------------------------- speed
class Throughput:
    """Images per second over the last log interval, from the wall clock.

    `add(n)` after every step (plain Python arithmetic, no sync); `rate()` at log steps returns images/s since the
    previous `rate()` and starts a new interval. The first `warmup_steps` steps after construction (compilation,
    cudnn autotuning, loader start-up) are not counted: the clock starts when they end, so `rate()` returns None
    until a counted interval exists. Wrap evaluation/checkpointing in `with meter.paused():` to exclude it.
    On CUDA `rate()` synchronizes first, so queued kernels are charged to the interval that launched them.
    Pass per-rank images and `world_size` to get the global rate.
    """

    def __init__(self, warmup_steps: int = 0, world_size: int = 1, device: torch.device | str | None = None):
        self.warmup_left = int(warmup_steps)
        self.world_size = int(world_size)
        self.device = torch.device(device) if device is not None else None
        self.images = 0
        self.elapsed = 0.0
        self._t0: float | None = None if self.warmup_left > 0 else time.perf_counter()

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def add(self, images: int) -> None:
        if self.warmup_left > 0:
            self.warmup_left -= 1
            if self.warmup_left == 0:
                self._sync()
                self._t0 = time.perf_counter()
            return
        self.images += int(images)

    def rate(self) -> float | None:
        self._sync()
        now = time.perf_counter()
        if self._t0 is not None:
            self.elapsed += now - self._t0
            self._t0 = now
        result = None
        if self.images and self.elapsed > 0:
            result = self.images * self.world_size / self.elapsed
        if self.warmup_left == 0:
            self.images, self.elapsed = 0, 0.0
        return result

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._sync()
        if self._t0 is not None:
            self.elapsed += time.perf_counter() - self._t0
        self._t0 = None
        try:
            yield
        finally:
            if self.warmup_left == 0:
                self._t0 = time.perf_counter()


# --------------------------------------------------------------------------------------------------- loss
def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


class RunningMean:
    """Weighted mean of device scalars without a host sync per step.

    `add(value, weight=1)` accumulates on the value's device; `compute()` returns the mean (one sync) and `reset()`
    starts a new interval. A NaN/inf ever added makes the mean non-finite, so the caller can detect a diverged
    interval with math.isfinite(compute()). `compute(all_ranks=True)` averages over DDP ranks (collective: every
    rank must call it)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sum: Tensor | None = None
        self._weight = 0.0

    @torch.no_grad()
    def add(self, value: Tensor | float, weight: float = 1.0) -> None:
        v = value.detach().to(torch.float64) if isinstance(value, Tensor) else torch.tensor(float(value),
                                                                                           dtype=torch.float64)
        self._sum = v * weight if self._sum is None else self._sum + v * weight
        self._weight += weight

    @property
    def count(self) -> float:
        return self._weight

    def compute(self, all_ranks: bool = False) -> float:
        if all_ranks and _dist_ready():
            dev = self._sum.device if self._sum is not None else _collective_device()
            t = torch.stack([self._sum if self._sum is not None else torch.zeros((), dtype=torch.float64,
                                                                                 device=dev),
                             torch.tensor(self._weight, dtype=torch.float64, device=dev)])
            dist.all_reduce(t)
            s, w = t.tolist()
            return s / w if w else math.nan
        if self._sum is None or not self._weight:
            return math.nan
        return float(self._sum.item()) / self._weight


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------------- accuracy
@torch.no_grad()
def accuracy_topk(logits: Tensor, targets: Tensor, ks: Sequence[int] = (1, 5)) -> Tensor:
    """Counts of samples whose target is among the top-k logits, one entry per k (int64 tensor, no sync).

    k larger than the number of classes counts every sample. Soft/one-hot targets (mixup) use their argmax."""
    if targets.ndim == 2:
        targets = targets.argmax(dim=1)
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(targets[:, None])
    return torch.stack([hit[:, : min(k, kmax)].sum() for k in ks])


class EvalAccumulator:
    """Sums over a validation pass -> {"val/loss", "val/top1", "val/top5"} (accuracies in percent).

        acc = EvalAccumulator(device)
        for x, y in loader: logits = model(x); acc.add(logits, y)
        metrics = acc.compute()      # all-reduces the sums when torch.distributed is initialised

    Loss is the mean cross-entropy per sample (pass `loss_sum` to use your own per-batch summed loss). Sums are
    float64 on `device`; `add` never syncs; `compute` costs one all-reduce and one host sync. Every rank must call
    `compute` under DDP. Samples duplicated by a padding sampler are counted twice: shard without padding for exact
    numbers."""

    def __init__(self, device: torch.device | str = "cpu", ks: Sequence[int] = (1, 5), prefix: str = "val"):
        self.ks, self.prefix = tuple(ks), prefix
        self.totals = torch.zeros(len(self.ks) + 2, dtype=torch.float64, device=device)  # loss, hits@k..., n

    @torch.no_grad()
    def add(self, logits: Tensor, targets: Tensor, loss_sum: Tensor | None = None) -> None:
        logits = logits.float()
        if loss_sum is None:
            loss_sum = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        dev = self.totals.device
        # torch.full launches a fill kernel; torch.tensor(..., device=cuda) would copy from the host and sync
        n = torch.full((1,), float(targets.shape[0]), dtype=torch.float64, device=dev)
        hits = accuracy_topk(logits, targets, self.ks).to(dev, torch.float64)
        self.totals += torch.cat([loss_sum.detach().reshape(1).to(dev, torch.float64), hits, n])

    def compute(self) -> dict[str, float]:
        totals = self.totals.clone()
        if _dist_ready():
            dist.all_reduce(totals)
        loss, *hits, n = totals.tolist()
        n = max(n, 1.0)
        out = {f"{self.prefix}/loss": loss / n}
        out.update({f"{self.prefix}/top{k}": 100.0 * h / n for k, h in zip(self.ks, hits)})
        return out
