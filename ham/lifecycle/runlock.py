"""One process per run directory: an OS file lock (fcntl.flock on RUN_DIR/.lock) held for the life of the run.

The kernel drops the lock when the holder exits in any way (SIGKILL and OOM-kill included), so a stale lock
never blocks a rerun: the `.lock` file may stay behind, the lock does not. A second process on the same run
directory gets ConfigError (exit 2, one line naming the holder's PID and host) before it writes anything of its
own. Filesystems without flock support (some Lustre mounts without `-o flock`) run unlocked, with one warning.
Only rank 0 of a DDP run takes it (the ranks of one run share the directory). No torch import.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from ham.errors import ConfigError

LOCK_NAME = ".lock"


class RunDirBusy(ConfigError):
    """Another live process holds the run directory's lock (exit 2)."""

_held: dict[str, int] = {}


def _key(run_dir: Path) -> str:
    return str(Path(run_dir).resolve())


def holds(run_dir: Path) -> bool:
    """Whether this process holds the lock of run_dir (then it is the directory's only writer)."""
    return _key(run_dir) in _held


def acquire(run_dir: Path) -> bool:
    """Take the lock of an existing run_dir (no-op if held). False: the filesystem cannot lock (warned).
    Raises ConfigError when another live process holds it."""
    import fcntl

    run_dir = Path(run_dir)
    key = _key(run_dir)
    if key in _held:
        return True
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        finally:
            os.close(fd)
        raise RunDirBusy(f"hydra.run.dir={run_dir} is in use by {holder} (lock {path}); wait for that run to "
                          f"end or stop it, or choose another hydra.run.dir") from None
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            print(f"warning: {path}: this filesystem cannot lock ({e.strerror}); nothing stops a second "
                  f"process from writing into {run_dir}", file=sys.stderr, flush=True)
            return False
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[key] = fd
    return True


def release(run_dir: Path) -> None:
    fd = _held.pop(_key(run_dir), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the lock
