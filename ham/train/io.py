"""The one atomic-write helper: at every instant the final name holds the old file or the complete new one.

temp file in the same directory (`.NAME.tmp-HOST-PID`: unique per process, so two writers never delete each
other's temp file) -> flush + fsync -> os.replace -> fsync the directory. Any OS error (a full disk, a read-only
directory, a quota) becomes StorageError: one line naming the path and the OS reason; the old file (if any) is
untouched and the temp file is removed.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import IO, Any, Callable

from ham.errors import StorageError

_HOST = socket.gethostname().replace("/", "_")


def temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{_HOST}-{os.getpid()}")


def is_stale_temp(tmp: Path, *, sole_writer: bool = False) -> bool:
    """A temp file nobody is writing any more: ours is never stale while we run; another process's is stale when
    that process is gone (same host), or always when the caller is provably the directory's only writer."""
    host, _, pid = tmp.name.rpartition(".tmp-")[2].rpartition("-")
    if not pid.isdigit():
        return sole_writer
    if host == _HOST and int(pid) == os.getpid():
        return False
    if sole_writer:
        return True
    if host != _HOST:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, someone else's
        return False
    return False


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind a failed write: torch.save reports ENOSPC as 'unexpected pos' with the OSError only in
    the exception's context."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def storage_error(path: Path, e: BaseException) -> StorageError | None:
    err = _os_error(e)
    if err is None:
        try:  # no OSError kept: a full filesystem is the usual cause of a short write
            st = os.statvfs(path.parent)
            if st.f_bavail * st.f_frsize < 64 * 1024:
                err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            pass
    if err is None:
        return None
    fix = {errno.ENOSPC: "free space there (earlier files are intact), then rerun the same command to resume",
           errno.EDQUOT: "free quota there (earlier files are intact), then rerun the same command to resume",
           errno.EROFS: "the filesystem is read-only: choose a writable hydra.run.dir",
           errno.EACCES: "make the directory writable or choose another hydra.run.dir",
           errno.EPERM: "make the directory writable or choose another hydra.run.dir"}.get(
        err.errno, "check the filesystem, then rerun the same command to resume")
    code = f" (errno {err.errno})" if err.errno is not None else ""
    return StorageError(f"cannot write {path}: {err.strerror or err}{code}; {fix}")


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any],
                 before_replace: Callable[[Path], Any] | None = None) -> Path:
    """`before_replace(tmp)` runs after the temp file is complete and synced, before it takes the final name
    (a checkpoint's digest file is written there: ham/train/checkpoint.py)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except StorageError:  # from before_replace's own atomic write: already one line naming its path
        raise
    except Exception as e:
        err = storage_error(path, e)
        if err is None:
            raise
        raise err from e
    finally:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: Path) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))
