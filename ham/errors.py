"""Errors with a one-line message meant for the user (train.py prints them and exits with code 2)."""


class ConfigError(ValueError):
    """Bad user input: the message names the offending key and the allowed values, in one line."""


class Preempted(Exception):
    """A stop signal arrived; a checkpoint was written. The process should exit with code 3 (requeue)."""


class NonFiniteLoss(RuntimeError):
    """The loss or the weights became NaN/inf; training stopped (exit code 1)."""


class StorageError(OSError):
    """Writing a run's files failed (full disk, read-only directory, quota): one line naming the path and the OS
    reason (exit code 1); earlier files are intact."""
