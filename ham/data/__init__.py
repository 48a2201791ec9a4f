"""Datasets and the resumable, DDP-sharded loader. Names load lazily (PEP 562): `ham.data.catalog`, which the
config check uses, must not pay for importing torch."""

from __future__ import annotations

from ham.lazy import lazy_names

_LAZY = {"check_dataset": "ham.data.catalog",
         "DatasetInfo": "ham.data.datasets", "build_datasets": "ham.data.datasets",
         "LOADER_BACKENDS": "ham.data.loader", "ResumableLoader": "ham.data.loader", "build_loader": "ham.data.loader"}
__all__ = sorted(_LAZY)
__getattr__ = lazy_names(__name__, _LAZY)
