"""Typed options: `opt(...)` declares a config field with its allowed values; `check_node` enforces them.

Every component's config dataclass (ham/registry.py) and the root schema (ham/schema.py) are built from these.
Hydra checks keys and types while composing; `check_node` adds what types cannot say (ranges, choices,
finiteness, keys added with `+key=`) and then the dataclass's own `cross_check` (rules across keys).
Torch-free.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from ham.errors import ConfigError

AUTO_BOOL = ("auto", True, False)  # a setting that is auto or a boolean


@dataclasses.dataclass
class NoKwargs:
    """A component without options of its own (an empty typed node: any key added is rejected)."""


def opt(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
        lt: float | None = None, choices: tuple | None = None, finite: bool = True, each: bool = False,
        doc: str = "") -> Any:
    """A dataclass field with its allowed values. `each`: the bounds apply to every element of a list."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "finite": finite, "each": each, "doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: dataclasses.replace(default), metadata=meta)
    return field(default=default, metadata=meta)


class Component:
    """Base of the schema dataclasses: `cross_check(node, root, path)` for rules across keys (override)."""

    @classmethod
    def cross_check(cls, node: DictConfig, root: DictConfig, path: str) -> None:
        pass

    @classmethod
    def row_label(cls, node: Any, label: str) -> str:
        """Its name in a table row given its options (default: the declared label; override when an option makes
        it a different method, e.g. STR's budget controller)."""
        return label


def describe(cls: type) -> list[str]:
    """`key: default  (allowed)  doc` per field, for --help."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else "..."
        meta = f.metadata or {}
        allowed = ""
        if meta.get("choices") is not None:
            allowed = "|".join(fmt(c) for c in meta["choices"])
        else:
            rng = [f"{sym} {meta[k]:g}" for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                   if meta.get(k) is not None]
            allowed = " and ".join(rng)
        text = f"{f.name}: {fmt(default) if not isinstance(default, (list, dict)) else default}"
        if allowed:
            text += f"  ({allowed})"
        if meta.get("doc"):
            text += f"  {meta['doc']}"
        out.append(text)
    return out



def select(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, throw_on_missing=False)


def fmt(v: Any) -> str:
    return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _describe(meta: dict, is_int: bool) -> str:
    if meta["choices"] is not None:
        return "allowed: " + ", ".join(fmt(c) for c in meta["choices"])
    rng = []
    for k, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta[k] is not None:
            rng.append(f"{sym} {meta[k]:g}")
    kind = "an integer" if is_int else "a finite number"
    return f"it must be {kind}" + (f" {' and '.join(rng)}" if rng else "")


def _value_ok(v: Any, meta: dict) -> bool:
    if meta["choices"] is not None:
        return any(v == c and type(v) is type(c) or (isinstance(c, float) and isinstance(v, (int, float))
                                                      and not isinstance(v, bool) and v == c)
                   for c in meta["choices"])
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return True  # not a number: the type was checked by OmegaConf
    if isinstance(v, float) and meta["finite"] and not math.isfinite(v):
        return False
    return ((meta["ge"] is None or v >= meta["ge"]) and (meta["gt"] is None or v > meta["gt"])
            and (meta["le"] is None or v <= meta["le"]) and (meta["lt"] is None or v < meta["lt"]))


def check_node(node: DictConfig, root: DictConfig, path: str, cls: type | None = None) -> None:
    """Range/choice checks of one typed node and its typed children, then its cross-field rules."""
    cls = cls or OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(cls):
        return
    names = {f.name for f in dataclasses.fields(cls)}
    for extra in node.keys():  # `+key=value` adds keys past the schema: no component would read them
        if extra not in names:
            key = f"{path}.{extra}" if path else str(extra)
            raise ConfigError(f"{key} is not a config key; keys of {path or 'the root config'}: "
                              f"{', '.join(sorted(names))}")
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        child = node._get_node(f.name) if f.name in node else None
        if isinstance(child, DictConfig):
            if not child._is_none():
                check_node(child, root, key)
            continue
        v = child._value() if child is not None else None
        if isinstance(child, ListConfig) and not child._is_none():
            v = child  # its elements, resolved (`each` bounds apply to them)
        meta = f.metadata
        if not meta:
            continue
        values = list(v) if isinstance(v, ListConfig) and meta["each"] else [v]
        for item in values:
            if item is None and (f.default is None or meta["choices"] and None in meta["choices"]):
                continue
            if not _value_ok(item, meta):
                shown = list(v) if isinstance(v, ListConfig) else v
                is_int = f.type in (int, "int", Optional[int], "Optional[int]", List[int], "Optional[List[int]]")
                raise ConfigError(f"{key}={fmt(shown)} is not allowed; {_describe(meta, is_int)}")
    if issubclass(cls, Component):
        cls.cross_check(node, root, path)


