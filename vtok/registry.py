"""Stable names for parts, so checkpoints store names and never import paths.

The core never imports a part package itself: the first lookup of a name that is
not registered yet imports the part packages (``vtok.tokenizers``,
``vtok.decoders``, ``vtok.ar_models``, ``vtok.eval``), whose modules register
their classes with :func:`register` as they load. ``import vtok`` stays light and
dependencies point one way: parts -> core.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import TypeVar

from vtok.errors import VtokError

PART_PACKAGES = ("vtok.tokenizers", "vtok.decoders", "vtok.ar_models", "vtok.eval")

_REGISTRY: dict[str, dict[str, type]] = {}
_loaded = False

T = TypeVar("T", bound=type)


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: file ``cls`` under ``kind``/``name``.

    The class must define a dataclass ``Config`` and take it as its only
    constructor argument.
    """

    def wrap(cls: T) -> T:
        if not hasattr(cls, "Config"):
            raise TypeError(f"{cls.__name__} needs a nested dataclass `Config` to be registered")
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__name__}, {cls.__name__})")
        table[name] = cls
        cls.registry_kind = kind
        cls.registry_name = name
        return cls

    return wrap


def load_parts() -> None:
    """Import every part package once, filling the registry."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in PART_PACKAGES:
        importlib.import_module(package)


def lookup(kind: str, name: str) -> type:
    """The class registered as ``kind``/``name``; a :class:`VtokError` naming the options if none."""
    if name not in _REGISTRY.get(kind, {}):
        load_parts()
    table = _REGISTRY.get(kind, {})
    if name not in table:
        close = difflib.get_close_matches(str(name), table, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise VtokError(f"unknown {kind} {name!r}{hint}; registered: {', '.join(sorted(table)) or 'none'}")
    return table[name]


def names(kind: str) -> list[str]:
    """Every name registered under ``kind``, sorted."""
    load_parts()
    return sorted(_REGISTRY.get(kind, {}))


def kinds() -> list[str]:
    """Every kind with a registered part, sorted (the registry-wide tests walk them all)."""
    load_parts()
    return sorted(_REGISTRY)
