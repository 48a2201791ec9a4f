"""What produced a result: the code's commit, the command, the library versions and the CPU threads. Written into
every run's summary.json and every sweep's sweep.json/results.md, so stored numbers can be regenerated (CPU results
depend on the thread count: a different count sums in a different order). Torch-free."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from ham.config import REPO_ROOT



CODE_PATHS = ("ham", "configs", "train.py", "sweep.py", "pyproject.toml", "uv.lock")


def git_commit() -> str | None:
    """HEAD's commit, with `+dirty` when tracked code or configs differ from it (results/ and docs do not count:
    a sweep writing its report does not make the next one dirty); None outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS))
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def command() -> str:
    """The command line as typed (`python sweep.py ...`, `python train.py ...`)."""
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    return shlex.join(["python", script, *sys.argv[1:]])


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for package in ("torch", "hydra-core", "timm"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def provenance(threads: int | None = None) -> dict[str, object]:
    return {"commit": git_commit(), "command": command(), **versions(), "cpu_cores": os.cpu_count(),
            **({"threads": threads} if threads is not None else {})}
