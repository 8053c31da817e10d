"""vtok: discrete visual tokenizers for image understanding and generation.

>>> import vtok
>>> tok = vtok.build("vq_f16", ["model.quantizer.codebook_size=1024"])  # a preset name or a YAML path
>>> tokens = tok.encode(images)          # images: (B, 3, H, W) in [-1, 1]
>>> recon = tok.decode(tokens)
>>> tok.save_pretrained("out/tok"); tok = vtok.load("out/tok")

Every registered module records its resolved config when built, so one made in code
saves and loads the same way: ``GPT(GPT.Config(...)).save_pretrained(d)``, then
``GPT.from_pretrained(d)`` (which refuses a folder holding another class).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vtok.compat import ensure_torchvision

# Before anything imports torchvision (timm, lpips, accelerate's launcher): a no-op where it works.
ensure_torchvision()

from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput, Tokenizer, TokenizerOutput
from vtok.registry import register
from vtok.tokens import Tokens

__version__ = "0.1.0"
__all__ = [
    "Quantizer",
    "QuantizerOutput",
    "Tokenizer",
    "TokenizerOutput",
    "Tokens",
    "VtokError",
    "build",
    "load",
    "load_config",
    "register",
]


def load_config(
    config: str | Path | dict[str, Any], overrides: Sequence[str] = (), overlays: Sequence[str | Path] = ()
) -> dict[str, Any]:
    """A preset (YAML path, preset name or mapping), then overlay YAML files merged over it, then dotted overrides.

    An overlay (e.g. ``configs/finetune/decoder.yaml`` or its name ``decoder``) is a partial preset: its mappings
    merge key by key into the preset's, any other value replaces the preset's. A name is one of ``vtok presets``;
    a file that exists at the path given wins over a name (:mod:`vtok.catalog`).
    """
    from vtok.catalog import read_config
    from vtok.config import apply_overrides, merge
    from vtok.presets import RunConfig

    raw = read_config(config) if isinstance(config, str | Path) else dict(config)
    for overlay in overlays:
        raw = merge(raw, read_config(overlay, ("finetune",)))
    return apply_overrides(RunConfig, raw, list(overrides))


def build(config: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> Any:
    """Build the ``model`` of a preset with random initialisation (a tokenizer or an AR model)."""
    from vtok.config import build_component

    return build_component("model", load_config(config, overrides)["model"], "model")


def load(directory: str | Path, map_location: str = "cpu") -> Any:
    """Load a model saved with ``save_pretrained`` (``config.json`` + ``model.safetensors``), in eval mode.

    ``directory`` is a local folder or a Hugging Face Hub id ``org/name[@revision]`` (fetched into the Hub cache).
    """
    from vtok.hub import model_dir
    from vtok.pretrained import load_pretrained

    return load_pretrained(model_dir(directory), map_location)
