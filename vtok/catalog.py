"""The preset catalogue: vtok's YAML presets by name, wherever vtok is installed from.

The presets are package data (``vtok.configs``: the repository's ``configs/`` folder), read
with :mod:`importlib.resources`, so a name works alike from a checkout, a wheel or a zip:

- ``tokenizer``: tokenizer presets (``vq_demo``, ``vq_f16``, ``oned_titok_l32``, ...);
- ``ar``: GPT presets (``gpt_demo``, ``gpt_b``, ...);
- ``finetune``: partial presets merged over one with ``--overlay`` (``decoder``, ``whole``).

How a text naming a preset resolves (:func:`read_config`): a file that exists at that path
wins; otherwise a bare name (no ``/``; a ``.yaml`` ending is allowed) is looked up in the
catalogue; anything else is a missing file. Names are unique over all kinds, and an unknown
name fails in one line listing the closest names.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtok.errors import VtokError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

KINDS = ("tokenizer", "ar", "finetune")
MODEL_KINDS = ("tokenizer", "ar")  # what ``vtok train CONFIG`` and ``vtok.build`` take; finetune: ``--overlay``
SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Preset:
    """One packaged YAML file: its name (the file's stem), its kind (its folder) and where it lies."""

    name: str
    kind: str
    resource: Traversable

    def text(self) -> str:
        """The YAML text."""
        return self.resource.read_text(encoding="utf-8")

    def read(self) -> dict[str, Any]:
        """The YAML mapping, checked as ``read_yaml`` checks a file (a real path even inside a zip)."""
        from vtok.config import read_yaml

        with resources.as_file(self.resource) as path:
            return read_yaml(path)

    def summary(self) -> str:
        """The first sentence of the file's leading comment (its own description), '' without one."""
        lines = []
        for line in self.text().splitlines():
            if not line.startswith("#"):
                break
            lines.append(line.lstrip("#").strip())
        text = " ".join(lines)
        end = re.search(r"[.;]\s+(?=[A-Z])", text)  # a sentence ends: not at "et al. 2025", "e.g. a" or "shape: ViT"
        return (text if end is None else text[: end.start() + 1]).strip()


def presets(kinds: Sequence[str] = KINDS) -> list[Preset]:
    """Every packaged preset of ``kinds``, by kind (in ``kinds``' order) then name."""
    root = resources.files("vtok.configs")
    out = []
    for kind in kinds:
        folder = root / kind
        files = [f for f in folder.iterdir() if f.is_file() and f.name.endswith(SUFFIXES)] if folder.is_dir() else []
        out += [Preset(_stem(f.name), kind, f) for f in sorted(files, key=lambda f: f.name)]
    return out


def find(name: str, kinds: Sequence[str] = KINDS) -> Preset:
    """The preset called ``name`` (``.yaml`` ending optional) among ``kinds``; one-line VtokError otherwise."""
    name = _stem(name)
    every = {p.name: p for p in presets()}
    preset = every.get(name)
    if preset is not None and preset.kind in kinds:
        return preset
    wanted = " or ".join(kinds)
    if preset is not None:
        hint = " (pass it with --overlay)" if preset.kind == "finetune" else ""
        raise VtokError(f"preset {name!r} is a {preset.kind} preset, not a {wanted} one{hint}")
    options = [p.name for p in every.values() if p.kind in kinds]
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise VtokError(f"no {wanted} preset named {name!r}{hint} (`vtok presets` lists them)")


def is_name(text: str) -> bool:
    """Whether ``text`` reads as a preset name rather than a path: no folder separator in it."""
    return bool(text) and "/" not in text and os.sep not in text and (os.altsep is None or os.altsep not in text)


def read_config(config: str | Path, kinds: Sequence[str] = MODEL_KINDS) -> dict[str, Any]:
    """A preset's YAML mapping from a path or a name: an existing file wins, then a name of ``kinds``.

    Raises:
        VtokError: a missing file (naming the packaged preset of the same stem, if any) or an unknown name.
    """
    from vtok.config import read_yaml

    path = Path(config)
    if path.is_file() or path.suffix not in ("", *SUFFIXES):
        return read_yaml(path)
    if is_name(str(config)):
        try:
            preset = find(str(config), kinds)
        except VtokError as err:  # "x.yaml" was meant as a file first: say that it is missing
            raise VtokError(f"config file not found: {path}; {err}" if path.suffix else str(err)) from None
        return preset.read()
    packaged = {p.name for p in presets(kinds)}
    stem = _stem(path.name)
    hint = f" (vtok's packaged preset of that name is '{stem}': pass the name)" if stem in packaged else ""
    raise VtokError(f"config file not found: {path}{hint}")


def _stem(filename: str) -> str:
    for suffix in SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return filename
