"""``vtok convert``: public checkpoints as ordinary vtok models, without the original repositories.

One module a source family, each mapping the source's published key layout onto
vtok's parts (see their docstrings): :mod:`~vtok.convert.vqgan` (``llamagen-vq``,
``taming-vqgan``), :mod:`~vtok.convert.titok` (``titok``, ``one-d-piece``) and
:mod:`~vtok.convert.gpt` (``llamagen-gpt``), :mod:`~vtok.convert.var` (``var-vqvae``) and
:mod:`~vtok.convert.magvit2` (``open-magvit2``), :mod:`~vtok.convert.tokenflow` (``tokenflow``).

The config is derived from the tensors' shapes (and from the source's config file
where the weights cannot say, e.g. TiTok's head counts); every source tensor must
be used (apart from each source's documented drops) and every target tensor
filled, else the error names the key. Files are read with
``torch.load(weights_only=True)``; a pickle that needs other objects is refused with
how to strip it, never executed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vtok.convert.common import read_checkpoint
from vtok.convert.gpt import llamagen_gpt
from vtok.convert.magvit2 import open_magvit2
from vtok.convert.titok import one_d_piece, titok
from vtok.convert.tokenflow import tokenflow
from vtok.convert.var import var_vqvae
from vtok.convert.vqgan import llamagen_vq, taming_vqgan
from vtok.errors import VtokError
from vtok.hub import checkpoint_file, source_config_file
from vtok.io import file_sha256

__all__ = ["SOURCES", "convert", "read_checkpoint"]

Mapping = Callable[..., tuple[dict[str, Any], dict[str, torch.Tensor]]]

SOURCES: dict[str, Mapping] = {
    "llamagen-vq": llamagen_vq,
    "taming-vqgan": taming_vqgan,
    "titok": titok,
    "one-d-piece": one_d_piece,
    "llamagen-gpt": llamagen_gpt,
    "var-vqvae": var_vqvae,
    "open-magvit2": open_magvit2,
    "tokenflow": tokenflow,
}
# Sources whose mapping reads the source's own config file (optional: their shapes say the rest; VAR: the scales;
# Open-MAGVIT2: its AR models' sub-code split).
TAKES_CONFIG = {"titok", "one-d-piece", "var-vqvae", "open-magvit2", "tokenflow"}
# A key prefix every checkpoint of the source has: tells a file of another family before any mapping runs.
MARKERS = {
    "llamagen-vq": "encoder.conv_blocks.0.",
    "taming-vqgan": "encoder.down.0.",
    "titok": "encoder.patch_embed.",
    "one-d-piece": "encoder.patch_embed.",
    "llamagen-gpt": "tok_embeddings.",
    "var-vqvae": "quantize.ema_vocab_hit_SV",
    "open-magvit2": "decoder.adaptive.",
    "tokenflow": "quantize.embedding_vqkd.",
}
# Sources whose layout contains others' markers: a file of one of those is not one of the first.
SUPERSETS = {"taming-vqgan": ("var-vqvae", "open-magvit2"), "llamagen-vq": ("tokenflow",)}


def check_family(state: dict[str, torch.Tensor], source: str, path: str | Path) -> None:
    """A one-line error when ``state`` lacks ``source``'s layout, naming the family it looks like."""
    for other in SUPERSETS.get(source, ()):
        if any(k.startswith(MARKERS[other]) for k in state):
            raise VtokError(f"{path} is not a {source} checkpoint: its keys look like {other} (try --from {other})")
    if any(k.startswith(MARKERS[source]) for k in state):
        return
    alike = [name for name, marker in MARKERS.items() if any(k.startswith(marker) for k in state)]
    alike = [name for name in alike if not set(SUPERSETS.get(name, ())) & set(alike)]  # the narrowest family
    looks = f"its keys look like {' / '.join(alike)} (try --from {alike[0]})" if alike else "its keys match no source"
    raise VtokError(f"{path} is not a {source} checkpoint: {looks}")


def convert(
    source: str,
    path: str | Path,
    out: str | Path | None = None,
    grid: int | None = None,
    config: str | Path | None = None,
):
    """Read ``path`` as ``source``, build the vtok model, load every tensor strictly; save to ``out`` if given.

    ``path`` is a file or a Hub id: ``org/name`` (the repository's weights) or ``org/name/file.pt``,
    either with an optional ``@revision``; the model's ``source`` records the Hub id and commit.

    ``config`` is the source's own config file (TiTok / One-D-Piece: its YAML or
    ``config.json``), needed only where the weights do not fix the architecture.
    """
    from vtok.config import build_component, read_yaml
    from vtok.pretrained import load_state_strict

    if source not in SOURCES:
        raise VtokError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    if config is not None and source not in TAKES_CONFIG:
        raise VtokError(f"{source} is converted from its weights alone; drop the config file")
    path, hub = checkpoint_file(path)
    if config is None and source in TAKES_CONFIG:
        config = source_config_file(path)  # the config.json published beside Hub weights
    state = read_checkpoint(path)
    args = (read_yaml(config),) if config is not None else ()  # JSON is YAML: config.json reads too
    check_family(state, source, path)
    try:
        cfg, mapped = SOURCES[source](state, *args)
    except KeyError as err:
        raise VtokError(f"{path} is not a {source} checkpoint: key {err} is missing") from None
    except (IndexError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise VtokError(f"{path} is not a complete {source} checkpoint ({err.__class__.__name__}: {err})") from None
    if grid is not None and "grid" in cfg and cfg["name"] == "gpt":
        cfg["grid"] = [grid, grid]
    model = build_component("model", cfg, "model")
    load_state_strict(model, mapped, str(path))
    model.source = {"family": source, "file": Path(path).name, "sha256": file_sha256(path), **hub}
    model.eval()
    if out is not None:
        model.save_pretrained(out)
    return model
