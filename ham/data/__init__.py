"""Datasets and the resumable, DDP-sharded loader. Names load lazily (PEP 562): `ham.data.catalog`, which the
config check uses, must not pay for importing torch."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"check_dataset": "ham.data.catalog",
         "DatasetInfo": "ham.data.datasets", "build_datasets": "ham.data.datasets",
         "LOADER_BACKENDS": "ham.data.loader", "ResumableLoader": "ham.data.loader", "build_loader": "ham.data.loader"}
__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ham.data' has no attribute {name!r}")
