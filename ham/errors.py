"""Errors with a one-line message meant for the user (train.py prints them and exits with code 2)."""


def one_line(e: BaseException | str) -> str:
    """An exception's message (or any text) on one line: whitespace runs, newlines included, become one space."""
    return " ".join(str(e).split())


def shorten(v: object, width: int = 60) -> str:
    """A config value as JSON, cut to `width` characters (for messages that show old -> new values)."""
    import json

    s = json.dumps(v, default=str)
    return s if len(s) <= width else s[:width - 3] + "..."


class ConfigError(ValueError):
    """Bad user input: the message names the offending key and the allowed values, in one line."""


class Preempted(Exception):
    """A stop signal arrived; a checkpoint was written. The process should exit with code 3 (requeue), or, under
    Hydra's submitit launcher, hand over to submitit's own handler (`requeue(signum, None)`), which requeues."""

    def __init__(self, message: str, signum: int | None = None, requeue=None) -> None:
        super().__init__(message)
        self.signum = signum
        self.requeue = requeue


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became NaN/inf; training stopped (exit code 1)."""


class StorageError(OSError):
    """Writing a run's files failed (full disk, read-only directory, quota): one line naming the path and the OS
    reason (exit code 1); earlier files are intact."""
