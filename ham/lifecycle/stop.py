"""Stop signals from the first line of train.py to the last byte of interpreter shutdown (no torch import).

A scheduler's stop signal (SIGTERM; SIGUSR1 = SLURM's `--signal`; SIGUSR2 = submitit's pre-timeout signal) must
never kill a job without an answer that requeues it; Ctrl-C (SIGINT) is handled the same way, with its own exit
code: 130 (128 + SIGINT, what a shell reports for a program Ctrl-C ended, so scripts and `make` see "interrupted
by the user", not "preempted, requeue me": a scheduler requeues on 3, never on 130). Phases:

    start-up   (imports, Hydra, validation, DDP setup, build, resume)   install() -> StopRequested is raised at
               once (a BaseException, so no `except Exception` swallows it) -> exit 3 (130 for SIGINT), "stopped
               before the first step", naming the checkpoint a requeue resumes from, if there is one
    training   the Trainer installs its own SIGTERM/SIGUSR1/SIGINT handlers (checkpoint at the next step, exit 3,
               130 for SIGINT); a SIGUSR2 reaching ours is handed to the Trainer's handler
    exiting    the outcome is decided (0/1/2/3/130): signals are ignored, and train.py blocks them for the
               interpreter shutdown, so a late signal cannot turn "done" or "checkpoint saved" into 143

A second Ctrl-C stops at once, in any phase before exiting: one line, exit 130, no checkpoint (files already
written are complete: every write is atomic; a temp file it leaves is removed by the next save). "Second" means a
SIGINT at least SECOND_INTERRUPT_S after the first: a terminal's Ctrl-C reaches every process of the foreground
group, so a train.py under torchrun or sweep.py gets one SIGINT from the terminal and a forwarded one from its
parent within milliseconds, and that pair is one Ctrl-C.

A stop is sticky for the process: a multirun job that starts after a stop raises StopRequested at once.
A signal that arrives before train.py's first line (the interpreter's own start, ~50 ms) still kills the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from typing import Any, Callable

STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT") if hasattr(signal, n))
EXIT_PREEMPTED, EXIT_INTERRUPTED = 3, 130
SECOND_INTERRUPT_S = 1.0


def exit_code(signum: int | None) -> int:
    """130 for Ctrl-C (SIGINT), 3 (requeue) for every scheduler's stop signal."""
    return EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_PREEMPTED


def how_to_continue(signum: int | None) -> str:
    code = exit_code(signum)
    return f"exit {code} (rerun the same command to resume)" if code == EXIT_INTERRUPTED else \
        f"exit {code} (requeue to resume)"


class StopRequested(BaseException):
    """A stop signal arrived before training started (nothing new to save). Exit 3: requeue."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_state: dict[str, Any] = {"mode": None, "stopped": None, "previous": {}, "sigint_at": None}


def second_interrupt(signum: int) -> bool:
    """Record a SIGINT; True when it is a second Ctrl-C (one came at least SECOND_INTERRUPT_S earlier)."""
    if signum != signal.SIGINT or _state["mode"] == "exiting":
        return False
    now, first = time.monotonic(), _state["sigint_at"]
    if first is None:
        _state["sigint_at"] = now
        return False
    return now - first >= SECOND_INTERRUPT_S


def exit_now() -> None:
    """A second Ctrl-C: one line (rank 0), exit 130 at once -- no checkpoint, no cleanup beyond the kernel's (the
    run directory's lock goes with the process; complete files stay complete)."""
    if os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) == "0":
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.write(f"error: interrupted again (second Ctrl-C): stopped at once without a new checkpoint; "
                             f"checkpoints already written are intact; exit {EXIT_INTERRUPTED} (rerun the same "
                             f"command to resume)\n")
            sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def signal_name(signum: int | None) -> str:
    try:
        return signal.Signals(signum).name
    except (ValueError, TypeError):
        return f"signal {signum}"


def _handler(signum: int, frame: Any) -> None:
    if _state["mode"] != "startup":  # exiting: the exit code is already decided
        return
    if second_interrupt(signum):
        exit_now()
    from ham.lifecycle.preempt import submitit_signal

    prev = _state["previous"].get(signum)
    if signum == submitit_signal() and callable(prev):
        return prev(signum, frame)  # a submitit job: submitit's handler requeues it (nothing new to save yet)
    current = signal.getsignal(signal.SIGTERM)
    if signum != signal.SIGTERM and callable(current) and current is not _handler:
        return current(signum, frame)  # the Trainer owns stop handling now: let it checkpoint
    if _state["stopped"] is not None:  # already stopping (unwinding): a second raise would become a traceback
        return
    _state["stopped"] = signum
    raise StopRequested(signum)


class TrainingStop:
    """The training phase's stop handling: `install()` makes SIGTERM/SIGUSR1/SIGINT (and submitit's pre-timeout
    signal, under submitit) set `signum` (the first one wins) instead of stopping; the loop asks `requested(step)`
    after each step and then checkpoints and exits 3 (130 for SIGINT); a second Ctrl-C exits at once. `agree(flag) -> bool` (DDP: an asynchronous all-reduce, ham.train.distributed
    .AsyncAgreement.poll) makes every rank stop at the same step; it is asked every `check_every` steps. `requeue`
    is submitit's own handler for its signal (called after the checkpoint: ham.lifecycle.preempt.hand_over)."""

    def __init__(self, agree: Callable[[bool], bool] | None = None, check_every: int = 1):
        self.signum: int | None = None
        self.requeue: Any = None
        self.agree, self.check_every = agree, check_every

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if second_interrupt(signum):
            exit_now()
        if self.signum is None:  # e.g. submitit's USR2, then SLURM's SIGTERM: the first decides (requeue)
            self.signum = signum

    def install(self) -> None:
        from ham.lifecycle.preempt import submitit_signal

        signals = [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT]
        submitit_sig = submitit_signal()
        if submitit_sig is not None:  # Hydra's submitit launcher: its pre-timeout signal (USR2) checkpoints too
            signals.append(submitit_sig)
        for sig in signals:
            try:
                previous = signal.signal(sig, self._on_signal)
            except ValueError:  # not in the main thread
                continue
            if sig == submitit_sig:  # submitit's requeue handler: called after the checkpoint (ham.cli)
                self.requeue = original_handler(sig) if previous is _handler else previous

    def requested(self, step: int) -> bool:
        if self.agree is None:
            return self.signum is not None
        if step % self.check_every:
            return False
        return self.agree(self.signum is not None)


def install() -> None:
    """Our handlers for every stop signal, mode start-up (idempotent; main thread only, else a no-op)."""
    for sig in STOP_SIGNALS:
        try:
            prev = signal.signal(sig, _handler)
        except ValueError:  # not the main thread
            return
        if prev is not _handler:
            _state["previous"][sig] = prev
    _state["mode"] = "startup"


def original_handler(sig: int) -> Any:
    """The handler `sig` had before install() (e.g. submitit's requeue handler), or None."""
    return _state["previous"].get(sig)


def installed() -> bool:
    return _state["mode"] is not None


def begin_job() -> None:
    """A (multirun) job starts: handlers back to start-up mode; a stop received earlier stops this job too."""
    if _state["mode"] is None:
        return
    install()
    if _state["stopped"] is not None:
        raise StopRequested(_state["stopped"])


def mark_stopped(signum: int | None) -> None:
    """The Trainer stopped on a signal (checkpoint saved): later jobs of this process must not start."""
    _state["stopped"] = signum if signum is not None else signal.SIGTERM


def exiting() -> None:
    if _state["mode"] is not None:
        _state["mode"] = "exiting"


def restore() -> None:
    """Give the previous handlers back (an in-process caller: tests, notebooks)."""
    for sig, prev in _state["previous"].items():
        try:
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        except (ValueError, TypeError):
            pass
    _state.update(mode=None, stopped=None, previous={}, sigint_at=None)


def block_for_exit() -> None:
    """train.py, after the exit code is known: stop signals stay pending until the process is gone."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, set(STOP_SIGNALS))
