"""PEP 562 lazy names for a package's __init__: `__getattr__ = lazy_names(__name__, {"HAM": "ham.optim.ham"})`
imports the module that defines a name on first use, so importing the package (ham, ham.optim, ham.data,
ham.models) stays torch-free for the config checks and `--help`."""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable


def lazy_names(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        setattr(sys.modules[package], name, value)  # the next access skips this function
        return value

    return __getattr__
