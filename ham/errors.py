"""Errors with a one-line message meant for the user (train.py prints them and exits with code 2)."""


class ConfigError(ValueError):
    """Bad user input: the message names the offending key and the allowed values, in one line."""
