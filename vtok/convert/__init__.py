"""``vtok convert``: public checkpoints as ordinary vtok models, without the original repositories.

One module a source family, each mapping the source's published key layout onto
vtok's parts (see their docstrings) and declaring its ``--from`` names with
:func:`vtok.convert.registry.source`: :mod:`~vtok.convert.vqgan` (``llamagen-vq``,
``taming-vqgan``), :mod:`~vtok.convert.titok` (``titok``, ``one-d-piece``),
:mod:`~vtok.convert.gpt` (``llamagen-gpt``), :mod:`~vtok.convert.var` (``var-vqvae``) and
:mod:`~vtok.convert.magvit2` (``open-magvit2``), :mod:`~vtok.convert.rqvae` (``rq-vae``), :mod:`~vtok.convert.tokenflow` (``tokenflow``), :mod:`~vtok.convert.unitok` (``unitok``), :mod:`~vtok.convert.ibq` (``ibq``), :mod:`~vtok.convert.dualtoken` (``dualtoken``), :mod:`~vtok.convert.gigatok` (``gigatok``, ``gigatok-2d``). Adding one: ``docs/extending.md``, "Add a converter".

The config is derived from the tensors' shapes (and from the source's config file
where the weights cannot say, e.g. TiTok's head counts); every source tensor must
be used (apart from each source's documented drops) and every target tensor
filled, else the error names the key. Files are read with
``torch.load(weights_only=True)``; a pickle that also holds other objects is read by
a restricted unpickler that rebuilds the tensors and never runs anything.
"""

from __future__ import annotations

from pathlib import Path

from vtok.convert.common import read_checkpoint
from vtok.convert.registry import Source, check_family, lookup_source, sources
from vtok.errors import VtokError
from vtok.hub import checkpoint_file, source_config_file
from vtok.io import file_sha256

__all__ = ["Source", "check_family", "convert", "read_checkpoint", "sources"]


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
    A mapping may return a ``"source"`` entry in its config: notes of what it chose among the
    file's contents (Open-MAGVIT2's ``use_ema``), kept in the model's ``source``.
    """
    from vtok.config import build_component, read_yaml
    from vtok.outputs import is_model_folder
    from vtok.pretrained import check_finite, load_state_strict

    src = lookup_source(source)
    if config is not None and not src.takes_config:
        raise VtokError(f"{source} is converted from its weights alone; drop the config file")
    path, hub = checkpoint_file(path)
    if Path(path).suffix == ".safetensors" and is_model_folder(Path(path).parent):
        raise VtokError(f"{path} is already a vtok model (its folder has vtok's config.json); load it with vtok.load")
    if config is None and src.takes_config:
        config = source_config_file(path)  # the config.json published beside Hub weights
    # The source's own entries first, in its loader's order; then every other source's, so a file of another
    # family is still read and named by the family check rather than reported as holding no state dict.
    known = [e for other in sources().values() for e in other.entries if e not in src.entries]
    state = read_checkpoint(path, (*src.entries, *dict.fromkeys(known)))
    # JSON is YAML: config.json reads too; without a file, the source's published defaults (if it names them).
    args: tuple = ()
    if config is not None:
        args = (read_yaml(config),)
    elif src.default_config is not None:
        args = (dict(src.default_config),)
    check_family(state, source, path)
    try:
        cfg, mapped = src.mapping(state, *args)
    except KeyError as err:
        raise VtokError(f"{path} is not {src.article} {source} checkpoint: key {err} is missing") from None
    except (IndexError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise VtokError(f"{path} is not a complete {source} checkpoint ({err.__class__.__name__}: {err})") from None
    notes = cfg.pop("source", {})  # what the mapping chose among the file's contents, e.g. {"use_ema": False}
    if grid is not None and "grid" in cfg and cfg["name"] == "gpt":
        cfg["grid"] = [grid, grid]
    model = build_component("model", cfg, "model")
    check_finite(mapped, str(path))
    load_state_strict(model, mapped, str(path))
    model.source = {"family": source, "file": Path(path).name, "sha256": file_sha256(path), **hub, **notes}
    model.eval()
    if out is not None:
        model.save_pretrained(out)
    return model
