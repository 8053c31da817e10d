"""Helpers shared by the checkpoint converters: reading foreign files safely, counting levels, renaming keys."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from vtok.errors import VtokError


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from .safetensors, .bin or a (weights-only) torch pickle."""
    path = Path(path)
    if not path.is_file():
        raise VtokError(f"checkpoint not found: {path}")
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
    try:
        # argparse.Namespace is what LlamaGen's training checkpoints carry besides tensors: plain data, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError with the offending global named, or a damaged file
        found = re.search(r"GLOBAL ([\w.]+)|Unsupported global: ([\w.]+)", str(err))
        if found is None:
            reason = (str(err).strip().splitlines() or [err.__class__.__name__])[0][:120]
            raise VtokError(f"{path} is a truncated or corrupt checkpoint ({reason})") from None
        what = f" ({found.group(1) or found.group(2)})"
        raise VtokError(
            f"{path} needs unpickling of objects vtok does not load{what}. If you trust the file, strip it to "
            "its weights: python -c \"import torch; c = torch.load('IN', weights_only=False); "
            "torch.save(c.get('state_dict', c.get('model', c)), 'OUT')\""
        ) from None
    for key in ("model", "state_dict", "ema"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VtokError(f"{path} holds no tensor state dict (under 'model', 'state_dict' or at the top)")
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
