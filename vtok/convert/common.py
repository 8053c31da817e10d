"""Helpers shared by the checkpoint converters: reading foreign files safely, counting levels, renaming keys."""

from __future__ import annotations

import argparse
import logging
import re
import warnings
from pathlib import Path

import torch

from vtok.errors import VtokError

log = logging.getLogger("vtok.convert")


DEFAULT_ENTRIES = ("model", "state_dict", "ema")


def read_checkpoint(path: str | Path, entries: tuple[str, ...] = DEFAULT_ENTRIES) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from .safetensors, .bin, a torch pickle or a raw pickle.

    Pickles are read weights-only; a file that also pickles other objects (a Lightning
    ``callbacks`` entry, a training script's arguments) is read again by the restricted
    unpickler (``unpickle.py``), which rebuilds the tensors and leaves every other
    object an inert placeholder that is never called. Entries that are not tensors
    beside the tensors of the state dict are left out and named in a warning.
    """
    path = Path(path)
    from vtok.io import check_regular_file

    check_regular_file(path, "checkpoint")
    if path.stat().st_size == 0:
        raise VtokError(f"{path} is empty (0 bytes): an interrupted download or copy?")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            reason = str(err).splitlines()[0][:120]
            raise VtokError(f"{path} is a truncated or corrupt safetensors file ({reason})") from None
    from vtok.memory import check_zip

    check_zip(path)  # a torch .pt is a zip: a bomb is refused from its directory, before inflating
    try:
        # argparse.Namespace is what LlamaGen's training checkpoints carry besides tensors: plain data, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before failing; the fallback decides
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # other pickled classes beside the weights, a raw pickle, or a damaged file
        obj = _read_restricted(path)
    for entry in entries:  # the first entry present, in the source's own loader's order
        found = _entry(obj, entry)
        if found is not None:
            obj = found
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        where = ", ".join(repr(e) for e in entries)
        raise VtokError(f"{path} holds no tensor state dict (under {where} or at the top): it holds {_describe(obj)}")
    others = [k for k in obj if k not in tensors]
    if others:  # e.g. a training script's arguments saved beside the weights: the tensors are the state dict
        entries = ", ".join(f"{k!r} ({_describe(obj[k])})" for k in others[:5]) + (", ..." if len(others) > 5 else "")
        log.warning("%s: read its %d tensors; left out %d other entries: %s", path, len(tensors), len(others), entries)
    return tensors


def _entry(obj: object, dotted: str) -> dict | None:
    """``obj["a"]["b"]`` for ``"a.b"`` where every step is a dict; None where any is missing."""
    for key in dotted.split("."):
        if not isinstance(obj, dict) or not isinstance(obj.get(key), dict):
            return None
        obj = obj[key]
    return obj


def _describe(value: object) -> str:
    """What a pickled value is, in a few words: 'an inert train.Args object', 'a dict of 3 entries', 'an int'."""
    from vtok.convert.unpickle import Inert

    if isinstance(value, Inert):
        return f"an inert {value.source} object"
    if isinstance(value, dict):
        keys = ", ".join(repr(k) for k in list(value)[:4]) + (", ..." if len(value) > 4 else "")
        return f"a dict of {len(value)} entries ({keys})" if value else "an empty dict"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _read_restricted(path: Path) -> object:
    """The file through the restricted unpickler: its weights, every other pickled object inert, nothing run."""
    from vtok.convert.unpickle import load_restricted

    try:
        obj, inert = load_restricted(path)
    except Exception as err:  # a damaged file is reported as such, whatever the unpickler met
        reason = (str(err).strip().splitlines() or [err.__class__.__name__])[0][:120]
        raise VtokError(f"{path} is a truncated or corrupt checkpoint ({reason})") from None
    log.warning("%s: read the weights; left inert, never called: %s", path, ", ".join(inert))
    return obj


def count_levels(state: dict[str, torch.Tensor], pattern: str) -> int:
    """1 + the largest integer captured by ``pattern`` over the keys (0 if none match)."""
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def rename(key: str, rules: list[tuple[str, str]]) -> str:
    """The first matching rule's rewrite: a leading prefix, or (rules starting with '.') an infix."""
    for src, dst in rules:
        if key.startswith(src) or (src.startswith(".") and src in key):
            return key.replace(src, dst, 1)
    return key


def vq_codebook(codes: torch.Tensor, prefix: str = "quantizer.vq") -> dict[str, torch.Tensor]:
    """vector-quantize-pytorch's EMA codebook buffers holding exactly ``codes`` (K, D)."""
    k = codes.shape[0]
    return {
        f"{prefix}._codebook.embed": codes[None].clone(),
        f"{prefix}._codebook.embed_avg": codes[None].clone(),
        f"{prefix}._codebook.cluster_size": torch.ones(1, k),
        f"{prefix}._codebook.initted": torch.tensor(True),
    }
