"""``vtok convert``: public checkpoints as ordinary vtok models, without the original repositories.

Sources (key layouts from the published code):

- ``llamagen-vq``: LlamaGen VQ-8 / VQ-16 (``vq_ds16_c2i.pt``), weights under ``"model"``;
  ``encoder.conv_blocks.{i}.{res,attn,downsample}``, ``mid.{0,1,2}``, decoder
  ``conv_blocks.{k}`` with k = 0 the lowest resolution, ``quantize.embedding.weight``
  stored un-normalised (l2-normalised at lookup), ``quantize.codebook_used`` dropped.
- ``taming-vqgan``: taming-transformers VQGAN (Lightning, weights under ``"state_dict"``);
  ``encoder.down.{i}``, ``mid.{block_1,attn_1,block_2}``, ``decoder.up.{i}`` by level,
  a plain Euclidean codebook; ``loss.*`` (discriminator, LPIPS) dropped.
- ``llamagen-gpt``: LlamaGen's class-conditional GPT (weights under ``"model"``):
  ``tok_embeddings``, ``cls_embedding.embedding_table``, ``layers.{i}.attention.{wqkv,wo}``,
  ``feed_forward.{w1,w2,w3}``, ``{attention,ffn}_norm``, ``norm``, ``output``.

The config is derived from the tensors' shapes; every source tensor must be used
(apart from the documented drops) and every target tensor filled, else the error
names the key. Files are read with ``torch.load(weights_only=True)``; a pickle that
needs other objects is refused with how to strip it, never executed.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vtok.errors import VtokError

# n_head of LlamaGen's published GPT sizes, by width (head count is not in the weights).
LLAMAGEN_HEADS = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2560: 40}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor mapping from .safetensors, .bin or a (weights-only) torch pickle."""
    path = Path(path)
    if not path.is_file():
        raise VtokError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        # argparse.Namespace is what LlamaGen's training checkpoints carry besides tensors: plain data, allowed.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError with the offending global named
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({found.group(1)})" if found else ""
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


def _levels(state: dict[str, torch.Tensor], pattern: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def _cnn_config(state: dict[str, torch.Tensor], prefix: str, level_re: str, block_name: str) -> dict[str, Any]:
    """ch, ch_mult, num_res_blocks, z_channels of a VQGAN-style CNN encoder from its weights."""
    ch = state[f"{prefix}.conv_in.weight"].shape[0]
    n = _levels(state, rf"{prefix}\.{level_re}\.(\d+)\.")
    blocks = _levels(state, rf"{prefix}\.{level_re}\.0\.{block_name}\.(\d+)\.")
    ch_mult = [
        state[f"{prefix}.{level_re}.{i}.{block_name}.{blocks - 1}.conv2.weight"].shape[0] // ch for i in range(n)
    ]
    z = state[f"{prefix}.conv_out.weight"].shape[0]
    return {
        "name": "conv",
        "ch": ch,
        "ch_mult": ch_mult,
        "num_res_blocks": blocks,
        "attn_levels": [-1],
        "z_channels": z,
    }


def _res_and_attn(src: str, dst: str) -> list[tuple[str, str]]:
    return [(f"{src}.res.", f"{dst}.block."), (f"{src}.attn.", f"{dst}.attn.")]


def _llamagen_vq(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = {k: v for k, v in state.items() if k != "quantize.codebook_used"}
    enc = _cnn_config(state, "encoder", "conv_blocks", "res")
    codes = state.pop("quantize.embedding.weight")
    levels = len(enc["ch_mult"])
    rules = [("encoder.mid.0.", "encoder.mid.block_1."), ("encoder.mid.1.", "encoder.mid.attn_1."),
             ("encoder.mid.2.", "encoder.mid.block_2."), ("decoder.mid.0.", "decoder.mid.block_1."),
             ("decoder.mid.1.", "decoder.mid.attn_1."), ("decoder.mid.2.", "decoder.mid.block_2.")]  # fmt: skip
    for i in range(levels):
        rules += _res_and_attn(f"encoder.conv_blocks.{i}", f"encoder.down.{i}")
        rules.append((f"encoder.conv_blocks.{i}.downsample.", f"encoder.down.{i}.downsample."))
        level = levels - 1 - i  # LlamaGen's decoder block 0 is the lowest resolution
        rules += _res_and_attn(f"decoder.conv_blocks.{i}", f"decoder.up.{level}")
        rules.append((f"decoder.conv_blocks.{i}.upsample.", f"decoder.up.{level}.upsample."))
    mapped = {_rename(k, rules): v for k, v in state.items()}
    quantizer = {"name": "vq", "dim": codes.shape[1], "codebook_size": codes.shape[0], "cosine": True, "ema": True}
    mapped.update(_codebook(F.normalize(codes.float(), dim=-1)))
    return _grid_config(enc, quantizer, mapped), mapped


def _taming_vqgan(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    enc = _cnn_config(state, "encoder", "down", "block")
    codes = state.pop("quantize.embedding.weight")
    quantizer = {"name": "vq", "dim": codes.shape[1], "codebook_size": codes.shape[0], "cosine": False, "ema": True}
    mapped = dict(state)
    mapped.update(_codebook(codes.float()))
    return _grid_config(enc, quantizer, mapped), mapped


def _grid_config(enc: dict[str, Any], quantizer: dict[str, Any], mapped: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The grid tokenizer's config, with attention at exactly the levels that carry attention weights."""
    n = len(enc["ch_mult"])
    enc = {**enc, "attn_levels": [i for i in range(n) if f"encoder.down.{i}.attn.0.q.weight" in mapped]}
    dec = {**enc, "attn_levels": [i for i in range(n) if f"decoder.up.{i}.attn.0.q.weight" in mapped]}
    return {"name": "grid", "encoder": enc, "quantizer": quantizer, "decoder": dec}


def _codebook(codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """vector-quantize-pytorch's EMA codebook buffers holding exactly ``codes`` (K, D)."""
    k = codes.shape[0]
    return {
        "quantizer.vq._codebook.embed": codes[None].clone(),
        "quantizer.vq._codebook.embed_avg": codes[None].clone(),
        "quantizer.vq._codebook.cluster_size": torch.ones(1, k),
        "quantizer.vq._codebook.initted": torch.tensor(True),
    }


def _llamagen_gpt(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    vocab, dim = state["tok_embeddings.weight"].shape
    if dim not in LLAMAGEN_HEADS:
        raise VtokError(f"width {dim} is not one of LlamaGen's GPT sizes ({sorted(LLAMAGEN_HEADS)}); heads unknown")
    depth = _levels(state, r"layers\.(\d+)\.")
    classes = state["cls_embedding.embedding_table.weight"].shape[0] - 1
    grid = 16 if vocab >= 4096 else 8  # LlamaGen's c2i models: 256 tokens (VQ-16 at 256px)
    cfg = {"name": "gpt", "codebook_sizes": [vocab], "grid": [grid, grid], "num_classes": classes, "dim": dim,
           "depth": depth, "heads": LLAMAGEN_HEADS[dim]}  # fmt: skip
    rules = [("tok_embeddings.", "tok_embeddings.0."), ("cls_embedding.embedding_table.", "cls_embedding."),
             (".attention.wqkv.", ".attention.qkv."), (".attention.wo.", ".attention.proj.")]  # fmt: skip
    return cfg, {_rename(k, rules): v for k, v in state.items() if k != "freqs_cis"}


def _rename(key: str, rules: list[tuple[str, str]]) -> str:
    for src, dst in rules:
        if key.startswith(src) or (src.startswith(".") and src in key):
            return key.replace(src, dst, 1)
    return key


SOURCES: dict[str, Callable[[dict[str, torch.Tensor]], tuple[dict[str, Any], dict[str, torch.Tensor]]]] = {
    "llamagen-vq": _llamagen_vq,
    "taming-vqgan": _taming_vqgan,
    "llamagen-gpt": _llamagen_gpt,
}


def convert(source: str, path: str | Path, out: str | Path | None = None, grid: int | None = None):
    """Read ``path`` as ``source``, build the vtok model, load every tensor strictly; save to ``out`` if given."""
    from vtok.config import build_component
    from vtok.pretrained import load_state_strict

    if source not in SOURCES:
        raise VtokError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    state = read_checkpoint(path)
    try:
        cfg, mapped = SOURCES[source](state)
    except KeyError as err:
        raise VtokError(f"{path} is not a {source} checkpoint: key {err} is missing") from None
    if grid is not None and "grid" in cfg and cfg["name"] == "gpt":
        cfg["grid"] = [grid, grid]
    model = build_component("model", cfg, "model")
    load_state_strict(model, mapped, str(path))
    model.eval()
    if out is not None:
        model.save_pretrained(out)
    return model
