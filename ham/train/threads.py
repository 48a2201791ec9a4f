"""How many CPU threads a rank computes with, and how many loader workers it starts (`trainer.threads`,
`trainer.num_workers`).

torch's default (one thread per core in every process) oversubscribes a machine as soon as anything else runs on
it: DDP ranks on one host, loader workers, a second job. On 2 cores with one other busy process the quickstart
trained at 22-48 it/s with torch's 2 threads and at ~210 it/s with one (issue 16). `auto` therefore:
  - splits the cores this process may use among the ranks on this machine (LOCAL_WORLD_SIZE / SLURM's tasks);
  - gives a small model (< SMALL_MODEL_PARAMS parameters) one thread: its kernels are too short to amortise
    waking a second thread, so extra threads cost more than they give, and the ham step follows (it uses
    torch.get_num_threads());
  - never exceeds OMP_NUM_THREADS when the user set it.
An integer sets the count exactly. The core-sharing rule itself lives in the library (ham/optim/cpu_threads.py),
which the fused CPU kernel follows too.
"""

from __future__ import annotations

import os

from ham.optim import cpu_threads
from ham.optim.cpu_threads import cores_per_rank, ranks_on_this_host, usable_cores  # noqa: F401 (re-exported)

SMALL_MODEL_PARAMS = 1_000_000
MAX_AUTO_WORKERS = 8


def choose_threads(setting: int | str, n_params: int, world_size: int) -> tuple[int, str]:
    """(threads, why) for `trainer.threads`."""
    if setting != "auto":
        return int(setting), "trainer.threads"
    share = cpu_threads.cores_per_rank(world_size)
    why = (f"{share} of {cpu_threads.usable_cores()} usable cores for this rank "
           f"({cpu_threads.ranks_on_this_host(world_size)} on this host)")
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and 0 < int(omp) < share:
        share, why = int(omp), f"OMP_NUM_THREADS={omp}"
    if n_params < SMALL_MODEL_PARAMS and share > 1:
        return 1, f"a small model ({n_params / 1e6:.2f}M parameters): extra threads would cost more than they give"
    return share, why


def choose_workers(setting: int | str, world_size: int) -> int:
    """Loader worker processes per rank for `trainer.num_workers`: auto = the cores left to this rank beside
    its main process, at most MAX_AUTO_WORKERS (0 on a single core: loading then runs in the main process)."""
    if setting != "auto":
        return int(setting)
    return min(MAX_AUTO_WORKERS, cpu_threads.cores_per_rank(world_size) - 1)


def apply_threads(setting: int | str, model, world_size: int) -> str:
    """Set torch's intra-op thread count for this rank; returns the line to print."""
    import torch

    n_params = sum(p.numel() for p in model.parameters())
    threads, why = choose_threads(setting, n_params, world_size)
    torch.set_num_threads(threads)
    return f"CPU threads: {threads} ({why}; trainer.threads=N overrides)"
