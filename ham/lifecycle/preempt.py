"""Preemption under Hydra's submitit launcher: submitit asks SLURM for its own pre-timeout signal (USR2 unless
SUBMITIT_PREEMPT_SIGNAL says otherwise) and installs a handler that requeues the job. The trainer traps that signal
like SIGUSR1 (finish the step, save a checkpoint on every rank), then `hand_over` calls submitit's handler, which
re-pickles the launcher's call and `scontrol requeue`s the job (counting time-outs against max_num_timeout) and
exits; the requeued job reruns the same Hydra job in the same directory, which resumes from the checkpoint."""

from __future__ import annotations

import os
import signal
import sys
import time


def submitit_signal() -> int | None:
    """The signal submitit's job handler listens to, when this process is a submitit job; else None."""
    if "SUBMITIT_EXECUTOR" not in os.environ:
        return None
    name = os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    return getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)


def hand_over(e: BaseException) -> None:
    """After a checkpoint on a submitit signal: let submitit requeue. Rank 0's handler requeues and exits (SystemExit);
    the other ranks' handler returns: they wait here for the requeue to end the job instead of exiting first."""
    requeue, signum = getattr(e, "requeue", None), getattr(e, "signum", None)
    if not callable(requeue) or signum is None or signum != submitit_signal():
        return
    print(f"checkpoint saved on {signal.Signals(signum).name}; submitit requeues the job", file=sys.stderr,
          flush=True)
    requeue(signum, None)
    if os.environ.get("SLURM_PROCID", "0") != "0":
        time.sleep(float(os.environ.get("HAM_REQUEUE_WAIT_S", "120")))
