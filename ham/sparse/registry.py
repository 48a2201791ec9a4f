"""Sparsifier registry: `build_sparsifier(name, **options)` (config group `sparsifier`)."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from ham.errors import ConfigError
from ham.sparse.base import Sparsifier

# name -> "module:Class", imported lazily (a sparsifier's heavy imports are paid only when it is chosen).
# To add one: a line here, a Sparsifier subclass in its module, a configs/sparsifier/<name>.yaml.
_REGISTRY = {
    "dense": "ham.sparse.base:Sparsifier",
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
        raise ConfigError(f"sparsifier.name={name!r} is not known; allowed: {', '.join(SPARSIFIER_NAMES)}")
    module, cls = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_sparsifier(name: str, **options: Any) -> Sparsifier:
    cls = sparsifier_class(name)
    sparsity = options.get("sparsity", 0.0)
    if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
        raise ConfigError(f"sparsifier.sparsity={sparsity!r} is not allowed; it must be a number in [0, 1)")
    accepted = inspect.signature(cls.__init__).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            allowed = sorted(k for k in accepted if k != "self")
            raise ConfigError(f"sparsifier.{unknown[0]} is not an option of sparsifier={name}; allowed: "
                              f"{', '.join(allowed) or 'none'}")
    try:
        return cls(**options)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"sparsifier={name}: {' '.join(str(e).split())}") from None
