"""Stable names for parts, so checkpoints store names and never import paths.

The core never imports a part package itself: the first lookup of a name that is
not registered yet imports the part packages (``vtok.tokenizers``,
``vtok.decoders``, ``vtok.ar_models``, ``vtok.eval``), whose modules register
their classes with :func:`register` as they load. ``import vtok`` stays light and
dependencies point one way: parts -> core.

Registering also makes every instance record its resolved config as ``spec`` when
it is built, however it is built (``GPT(GPT.Config(...))`` as much as from YAML),
and gives every registered torch module ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.util
from collections.abc import Callable
from typing import Any, TypeVar

from vtok.errors import VtokError

PART_PACKAGES = ("vtok.tokenizers", "vtok.decoders", "vtok.ar_models", "vtok.eval")
# Kinds kept in one module of each part package, imported only when that kind is looked up (trainers pull in
# accelerate, which loading a model must not), and built from the whole run config, not a ``Config`` dataclass.
KIND_MODULES = {"trainer": "train"}

_REGISTRY: dict[str, dict[str, type]] = {}
_loaded = False

T = TypeVar("T", bound=type)


def register(kind: str, name: str) -> Callable[[T], T]:
    """Class decorator: file ``cls`` under ``kind``/``name``.

    The class must define a dataclass ``Config`` and take it as its only
    constructor argument (None may stand for the defaults; trainers, and other kinds of
    :data:`KIND_MODULES`, excepted). Its instances record ``spec`` (``{"name": name, **every
    field}``, nested parts resolved alike) once built; a torch module also gets
    ``save_pretrained`` and ``from_pretrained``.
    """

    def wrap(cls: T) -> T:
        if kind not in KIND_MODULES and not hasattr(cls, "Config"):
            raise TypeError(f"{cls.__name__} needs a nested dataclass `Config` to be registered")
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not cls:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__name__}, {cls.__name__})")
        table[name] = cls
        cls.registry_kind = kind
        cls.registry_name = name
        if not hasattr(cls, "Config"):  # a trainer: not built from a config, nothing to record
            return cls
        _record_spec_on_init(cls)
        if hasattr(cls, "state_dict"):  # a torch module (the registry itself does not import torch)
            from vtok.pretrained import Saveable

            for method in ("save_pretrained", "from_pretrained"):
                if not hasattr(cls, method):
                    setattr(cls, method, Saveable.__dict__[method])
        return cls

    return wrap


def _record_spec_on_init(cls: type) -> None:
    """Wrap ``cls.__init__`` so an instance of exactly ``cls`` records its resolved config as ``spec``.

    A registered subclass (``RedundantPad`` of ``NestedDropout``) calls its base's
    ``__init__`` with its own config: only the outermost, exact class records.
    """
    original = cls.__init__

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if type(self) is cls:
            from vtok.config import spec_of

            self.spec = spec_of(cls, args[0] if args else kwargs.get("cfg"))

    cls.__init__ = __init__


def load_parts() -> None:
    """Import every part package once, filling the registry."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in PART_PACKAGES:
        importlib.import_module(package)


def _load_kind_modules(kind: str) -> None:
    """Import the module of each part package that holds ``kind`` (see :data:`KIND_MODULES`), where there is one."""
    if kind in KIND_MODULES:
        for package in PART_PACKAGES:
            if importlib.util.find_spec(f"{package}.{KIND_MODULES[kind]}") is not None:
                importlib.import_module(f"{package}.{KIND_MODULES[kind]}")


def lookup(kind: str, name: str) -> type:
    """The class registered as ``kind``/``name``; a :class:`VtokError` naming the options if none."""
    if name not in _REGISTRY.get(kind, {}):
        load_parts()
        _load_kind_modules(kind)
    table = _REGISTRY.get(kind, {})
    if name not in table:
        close = difflib.get_close_matches(str(name), table, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise VtokError(f"unknown {kind} {name!r}{hint}; registered: {', '.join(sorted(table)) or 'none'}")
    return table[name]


def names(kind: str) -> list[str]:
    """Every name registered under ``kind``, sorted."""
    load_parts()
    _load_kind_modules(kind)
    return sorted(_REGISTRY.get(kind, {}))


def kinds() -> list[str]:
    """Every kind with a registered part, sorted (the registry-wide tests walk them all)."""
    load_parts()
    return sorted(_REGISTRY)
