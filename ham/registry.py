"""One declaration per component; everything else about it derives from here. Torch-free.

A component (a model, a dataset, an optimizer, a sparsifier) is a typed config dataclass decorated with

    @declare("sparsifier", "snip", build="ham.sparse.snip:SNIP", label="SNIP")
    class SNIPSparsifier(SparsifierConfig):
        # "SNIP: prune at initialisation by |weight x gradient|" (the docstring's first line: its help text)
        batches: int = opt(1, ge=1, doc="training batches the scores are summed over")

and from that one declaration come: its Hydra ConfigStore entries (`schema/<group>/<name>`, which an option YAML
pulls in, and `<group>/<name>` itself when there is no YAML), the allowed names of the group, the defaults and the
help text (the dataclass fields with their `opt(...)` bounds and docs), the builder (`build(group, name, **opts)`
imports `module:attr` on first use), its label in sweep tables, and its facts (`facts(group, name)`: e.g. a model's
channels_last preference or no-decay parameter names, a dataset's shape); no code branches on a component's name.

Declarations live in torch-free modules next to their family's code (FAMILIES): `train.py --help` and every config
error answer in ~0.5 s, and importing torch alone costs ~6 s on a 2-core machine.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from omegaconf import MISSING

from ham.options import opt

# The torch-free modules holding each family's declarations, imported by `load()`.
FAMILIES = {"model": "ham.models.options", "dataset": "ham.data.options", "optimizer": "ham.optim.options",
            "sparsifier": "ham.sparse.options"}


@dataclass(frozen=True)
class Declaration:
    group: str
    name: str
    schema: type  # the typed config dataclass
    build: str  # "module:attr" of the implementation (imported on first use: torch lives there)
    label: str  # its name in tables and sweep output
    facts: Mapping[str, Any]
    doc: str  # first line of the schema's docstring: the help text

    def implementation(self) -> Callable[..., Any]:
        return resolve(self.build)


def resolve(target: str) -> Any:
    """The object a "module:attr" string names (imported on first use)."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


_DECLARED: dict[str, dict[str, Declaration]] = {g: {} for g in FAMILIES}


def declare(group: str, name: str, *, build: str, label: str | None = None, **facts: Any):
    """Class decorator: makes `cls` a dataclass with a `name` field fixed to `name`, registered under (group, name)."""
    if group not in FAMILIES:
        raise ValueError(f"group={group!r} is not a component family; allowed: {', '.join(FAMILIES)}")

    def register(cls: type) -> type:
        cls.__annotations__ = {"name": "str", **cls.__dict__.get("__annotations__", {})}
        cls.name = opt(name, choices=(name,))
        cls = dataclass(cls)
        old = _DECLARED[group].get(name)
        if old is not None and old.schema.__qualname__ != cls.__qualname__:
            raise ValueError(f"{group} {name!r} is declared twice ({old.schema.__name__} and {cls.__name__})")
        doc = (cls.__doc__ or "").strip().splitlines()
        _DECLARED[group][name] = Declaration(group, name, cls, build, label or name, dict(facts),
                                             doc[0] if doc and not doc[0].startswith(cls.__name__ + "(") else "")
        return cls

    return register


def load() -> None:
    """Import every family's declarations (idempotent, torch-free)."""
    for module in FAMILIES.values():
        importlib.import_module(module)


def declarations(group: str) -> dict[str, Declaration]:
    load()
    return dict(_DECLARED[group])


def names(group: str) -> tuple[str, ...]:
    return tuple(declarations(group))


def get(group: str, name: str) -> Declaration:
    found = declarations(group)
    if name not in found:
        raise ValueError(f"unknown {group} {name!r}; allowed: {', '.join(found)}")
    return found[name]


def facts(group: str, name: str) -> Mapping[str, Any]:
    return get(group, name).facts


def fact(group: str, name: str, key: str, default: Any = None) -> Any:
    return get(group, name).facts.get(key, default)


def named_with(group: str, key: str) -> tuple[str, ...]:
    """The components of a group whose fact `key` is true (e.g. the sparsifiers Sign-In can take masks from)."""
    return tuple(n for n, d in declarations(group).items() if d.facts.get(key))


def defaults(group: str, name: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A component's options at their declared defaults (fields without one are left out)."""
    out = {}
    for f in dataclasses.fields(get(group, name).schema):
        if f.name in skip:
            continue
        if f.default is not dataclasses.MISSING and f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def build(group: str, name: str, *args: Any, **options: Any) -> Any:
    """The implementation of (group, name) called with `options` (library-style errors: ValueError/TypeError)."""
    return get(group, name).implementation()(*args, **options)
