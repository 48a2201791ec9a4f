"""Which rank of how many this process is, from the launcher's environment (torch-free: the CLI asks before
importing torch)."""

from __future__ import annotations

import os


def detect_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun (RANK/WORLD_SIZE/LOCAL_RANK) or srun (SLURM_PROCID/...)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0
