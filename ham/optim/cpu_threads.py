"""How many CPU threads one process should compute with: the cores it may use (its affinity mask: a SLURM, cgroup
or taskset limit), split among the ranks on this machine. torch's default (one thread per core in EVERY process)
oversubscribes as soon as two ranks share a host; these are the library's and the trainer's one rule for it
(ham/train/threads.py builds `trainer.threads=auto` on them; the fused CPU kernel caps its threads with them).
No torch, no app imports: plain os/env reads, cheap enough to call once per optimizer step.
"""

from __future__ import annotations

import os


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def ranks_on_this_host(world_size: int) -> int:
    env = os.environ
    for key in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = env.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    if env.get("SLURM_NTASKS", "").isdigit() and env.get("SLURM_NNODES", "").isdigit():
        return max(1, -(-int(env["SLURM_NTASKS"]) // max(1, int(env["SLURM_NNODES"]))))
    return max(1, world_size) if "MASTER_ADDR" not in env or env.get("MASTER_ADDR") in ("localhost", "127.0.0.1") \
        else 1


def cores_per_rank(world_size: int) -> int:
    cpus_per_task = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if "SLURM_PROCID" in os.environ and cpus_per_task.isdigit():  # a SLURM step: its own allocation per task
        return max(1, min(int(cpus_per_task), usable_cores()))
    return max(1, usable_cores() // ranks_on_this_host(world_size))


def world_size() -> int:
    """Ranks of the current job: torch.distributed's if it is initialised (only looked up if torch is already
    imported), else WORLD_SIZE from the launcher's environment, else 1."""
    import sys

    dist = getattr(sys.modules.get("torch"), "distributed", None)
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except Exception:  # noqa: BLE001, S110 -- a half-torn-down process group: fall back to the environment
        pass
    value = os.environ.get("WORLD_SIZE", "")
    return int(value) if value.isdigit() and int(value) > 0 else 1


def kernel_threads(requested: int) -> int:
    """Threads for a CPU kernel that would use `requested` (torch.get_num_threads(), which the trainer sets
    deliberately): never more than this rank's share of the cores, so N ranks on one host, each with torch's
    default of one thread per core, do not oversubscribe it; one thread where the share is one core."""
    return max(1, min(int(requested), cores_per_rank(world_size())))
