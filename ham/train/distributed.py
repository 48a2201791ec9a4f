"""Process-group setup from torchrun's or SLURM's environment; single process when neither is present."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ham.lifecycle.world import detect_world  # noqa: F401 (re-exported; torch-free for the CLI)


def _ddp_options() -> dict:
    """DistributedDataParallel options of the trainer: grads are views into the all-reduce buckets (no extra
    copy per step); BN buffers are not broadcast on every forward (twice per SAM step) -- the trainer makes them
    rank 0's before evaluation and at the end. Newer torch spells the latter forward_sync_buffers=False (buffers
    are still synced once at construction); older torch broadcast_buffers=False."""
    import inspect

    params = inspect.signature(torch.nn.parallel.DistributedDataParallel.__init__).parameters
    no_broadcast = {"forward_sync_buffers": False} if "forward_sync_buffers" in params else \
        {"broadcast_buffers": False}
    return {"gradient_as_bucket_view": True, **no_broadcast}


DDP_OPTIONS = _ddp_options()


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    process_group: bool = False  # a torch.distributed group exists (torchrun/srun), even for world size 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """DDP path: several ranks, or one rank launched by torchrun (DDP over a group of one)."""
        return self.world_size > 1 or self.process_group


def setup_distributed(timeout_min: int = 30) -> DistEnv:
    rank, world, local = detect_world()
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ  # torchrun (even --nproc_per_node=1)
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    # torchrun always gets a process group, so `torchrun --nproc_per_node=1` runs the DDP path (nccl on a GPU)
    if (world > 1 or launched) and not dist.is_initialized():
        # srun sets no MASTER_ADDR: the sbatch template exports it (first node of the allocation)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=timeout_min),
                                device_id=device if device.type == "cuda" else None)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device,
                   process_group=dist.is_available() and dist.is_initialized())


def teardown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        # torch >= 2.13: without a barrier a rank sometimes aborts at exit
        dist.barrier()
        dist.destroy_process_group()


def all_agree(flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank says True (e.g. a stop signal seen by one rank)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)



class AsyncAgreement:
    """`all_agree` without draining the device: `poll(flag)` starts an asynchronous all-reduce (MAX) of this
    rank's flag and returns the result of the PREVIOUS poll, which every rank started at the same step and which
    has long completed. On CUDA the result travels to pinned host memory behind an event, so reading it waits for
    that event only (done one interval ago), never for the queued training work: no host-device sync in the
    steady state. A stop is thus acted on one interval later, on every rank at the same step. Without a process
    group it answers `flag` at once."""

    def __init__(self, device: torch.device):
        self.device = device
        self._pending = None  # (work, device tensor, host tensor, event)

    def poll(self, flag: bool) -> bool:
        if not (dist.is_available() and dist.is_initialized()):
            return flag
        previous = self._collect()
        cuda = self.device.type == "cuda"
        # torch.full launches a fill: no host-to-device copy (torch.tensor(..., device=cuda) would sync)
        t = torch.full((1,), 1.0 if flag else 0.0, device=self.device)
        work = dist.all_reduce(t, op=dist.ReduceOp.MAX, async_op=True)
        host, event = t, None
        if cuda:
            work.wait()  # makes the current stream wait for the collective; the host does not wait
            host = torch.empty(1, pin_memory=True)
            host.copy_(t, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            work = None
        host.host_buffer = True  # read on the host only (gpu_check's CPU sync stand-in skips such tensors)
        self._pending = (work, t, host, event)
        return previous

    def _collect(self) -> bool:
        if self._pending is None:
            return False
        work, _, host, event = self._pending
        self._pending = None
        if work is not None:
            work.wait()
        if event is not None:
            event.synchronize()
        return host.tolist()[0] > 0

    def drain(self) -> bool:
        """Wait for a poll still in flight (before tearing the group down) and return its result."""
        return self._collect()
