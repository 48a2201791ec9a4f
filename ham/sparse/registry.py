"""Sparsifier registry: `build_sparsifier(name, **options)` (config group `sparsifier`; options: ham/schema.py).

Library errors are plain ValueError/TypeError with the constructor's own argument names; the CLI's schema check
catches bad config values before this runs.
"""

from __future__ import annotations

import importlib
from typing import Any

from ham.sparse.base import Sparsifier

# name -> "module:Class", imported lazily (a sparsifier's heavy imports are paid only when it is chosen).
# To add one: a line here, a Sparsifier subclass in its module, a schema in ham/schema.py, a
# configs/sparsifier/<name>.yaml.
_REGISTRY = {
    "dense": "ham.sparse.base:Dense",
    "random": "ham.sparse.random_pai:RandomPaI",
    "acdc": "ham.sparse.acdc:AcDc",
    "rigl": "ham.sparse.rigl:RigL",
    "str": "ham.sparse.str_:STR",
    "signin": "ham.sparse.signin:SignIn",
    "mw": "ham.sparse.mw:MW",
}
SPARSIFIER_NAMES = tuple(_REGISTRY)


def sparsifier_class(name: str) -> type[Sparsifier]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown sparsifier {name!r}; allowed: {', '.join(SPARSIFIER_NAMES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_sparsifier(name: str, **options: Any) -> Sparsifier:
    sparsity = options.get("sparsity", 0.0)
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} is not allowed; it must be a number in [0, 1)")
    return sparsifier_class(name)(**options)  # an unknown option is the constructor's TypeError
