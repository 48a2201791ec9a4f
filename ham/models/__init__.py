"""Models: declared in ham/models/options.py (torch-free), built by `build_model` (ham/models/factory.py).

Names load lazily (PEP 562): the config check imports ham.models.options without paying for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"build_model": "ham.models.factory", "classifier_and_first_layer": "ham.models.factory"}
__all__ = ["MODEL_NAMES", *_LAZY]


def __getattr__(name: str) -> Any:
    if name == "MODEL_NAMES":
        from ham import registry

        return registry.names("model")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ham.models' has no attribute {name!r}")
