"""`build_sparsifier(name, **options)` from the declarations in ham/sparse/options.py (ham/registry.py).

Library errors are plain ValueError/TypeError with the constructor's own argument names; the CLI's schema check
catches bad config values before this runs.
"""

from __future__ import annotations

from typing import Any

from ham import registry
from ham.sparse.base import Sparsifier

SPARSIFIER_NAMES = registry.names("sparsifier")


def sparsifier_class(name: str) -> type[Sparsifier]:
    return registry.get("sparsifier", name).implementation()


def build_sparsifier(name: str, **options: Any) -> Sparsifier:
    sparsity = options.get("sparsity", 0.0)
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} is not allowed; it must be a number in [0, 1)")
    return sparsifier_class(name)(**options)  # an unknown option is the constructor's TypeError
