"""The registry of checkpoint sources: each converter module declares its sources here, once.

A converter is one module of :mod:`vtok.convert` holding a mapping function
``(state, [source_config]) -> (vtok config, vtok state dict)`` decorated with
:func:`source`, which files a :class:`Source` under its ``--from`` name. Every module
of the package is imported on the first lookup, so a new source is one new file
(plus its test): ``convert()``, the family check and ``vtok convert --help`` read
this registry and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from vtok.errors import VtokError

Mapping = Callable[..., tuple[dict[str, Any], dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class Source:
    """One ``--from`` source: how its files are recognised and mapped onto vtok.

    Attributes:
        name: the ``--from`` name, e.g. ``"var-vqvae"``.
        title: how help texts name the model, e.g. ``"VAR"``.
        marker: a key prefix every checkpoint of the source has; tells another family's file before mapping.
        mapping: ``(state, [source_config]) -> (vtok config, vtok state dict)``; the second argument is passed
            only when ``takes_config``.
        contains: sources whose marker this source's files carry too (its layout extends theirs, as VAR's
            and Open-MAGVIT2's extend taming's): a file of this source is then refused as one of those.
        takes_config: the mapping reads the source's own config file (``--config``; optional: the weights
            say the rest).
        config_help: what ``--config`` gives this source, for ``vtok convert --help``.
        default_config: the source config the mapping gets when no file is given nor published beside
            Hub weights (the source's published defaults); None: the mapping is called without one.
        entries: the checkpoint entries that may hold the state dict, in the order the source's own
            loader reads them (dotted for nested entries, e.g. UniTok's ``trainer.unitok``); a file that
            is a state dict at its top level is read as it is. Where a source's evaluation prefers the
            EMA weights, ``ema`` comes first, so a training checkpoint converts what its authors evaluate.
    """

    name: str
    title: str
    marker: str
    mapping: Mapping
    contains: tuple[str, ...] = ()
    takes_config: bool = False
    config_help: str = ""
    default_config: dict[str, Any] | None = None
    entries: tuple[str, ...] = ("model", "state_dict", "ema")

    @property
    def article(self) -> str:
        """'a' or 'an' before the name, by its sound ("an open-magvit2", "a one-d-piece")."""
        return "an" if self.name[0] in "aeiou" and not self.name.startswith(("one", "uni", "use")) else "a"

    def matches(self, state: dict[str, torch.Tensor]) -> bool:
        """Whether ``state`` carries this source's marker."""
        return any(k.startswith(self.marker) for k in state)


_SOURCES: dict[str, Source] = {}
_loaded = False


def source(name: str, title: str, marker: str, **fields: Any) -> Callable[[Mapping], Mapping]:
    """Decorator of a mapping function: register it as the :class:`Source` ``name`` (other fields by keyword).

    The function is returned unchanged, so one mapping may serve several sources.
    """

    def wrap(mapping: Mapping) -> Mapping:
        if name in _SOURCES and _SOURCES[name].mapping is not mapping:
            raise ValueError(f"source {name!r} is declared twice")
        _SOURCES[name] = Source(name, title, marker, mapping, **fields)
        return mapping

    return wrap


def sources() -> dict[str, Source]:
    """Every declared source by name, sorted; the converter modules are imported on the first call."""
    global _loaded
    if not _loaded:
        _loaded = True
        import vtok.convert

        for module in pkgutil.iter_modules(vtok.convert.__path__):
            importlib.import_module(f"vtok.convert.{module.name}")
    return dict(sorted(_SOURCES.items()))


def lookup_source(name: str) -> Source:
    """The source called ``name``; a :class:`VtokError` naming the others if there is none."""
    table = sources()
    if name not in table:
        raise VtokError(f"unknown source {name!r}; one of {', '.join(table)}")
    return table[name]


def check_family(state: dict[str, torch.Tensor], name: str, path: object) -> None:
    """A one-line error when ``state`` lacks source ``name``'s layout, naming the family it looks like."""
    table = sources()
    wanted = table[name]
    for other in table.values():
        if name in other.contains and other.matches(state):
            raise VtokError(
                f"{path} is not {wanted.article} {name} checkpoint: its keys look like {other.name} "
                f"(try --from {other.name})"
            )
    if wanted.matches(state):
        return
    alike = [s for s in table.values() if s.matches(state)]
    # The narrowest family: a match whose layout another match extends is dropped.
    alike = [s.name for s in alike if not any(s.name in o.contains for o in alike)]
    looks = f"its keys look like {' / '.join(alike)} (try --from {alike[0]})" if alike else "its keys match no source"
    raise VtokError(f"{path} is not {wanted.article} {name} checkpoint: {looks}")
