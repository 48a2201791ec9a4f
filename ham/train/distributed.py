"""Process-group setup from torchrun's or SLURM's environment; single process when neither is present."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def detect_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or srun (SLURM_PROCID/...)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def setup_distributed(timeout_min: int = 30) -> DistEnv:
    rank, world, local = detect_world()
    if torch.cuda.is_available():
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # srun sets no MASTER_ADDR: the sbatch template exports it (first node of the allocation)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=timedelta(minutes=timeout_min),
                                device_id=device if device.type == "cuda" else None)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=device)


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

