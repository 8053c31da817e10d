"""LlamaGen VQ and taming VQGAN checkpoints as vtok grid tokenizers (the ``conv`` encoder and decoder).

- ``llamagen-vq``: LlamaGen VQ-8 / VQ-16 (``vq_ds16_c2i.pt``), weights under ``"model"``;
  ``encoder.conv_blocks.{i}.{res,attn,downsample}``, ``mid.{0,1,2}``, decoder
  ``conv_blocks.{k}`` with k = 0 the lowest resolution, ``quantize.embedding.weight``
  stored un-normalised (l2-normalised at lookup), ``quantize.codebook_used`` dropped.
- ``taming-vqgan``: taming-transformers VQGAN (Lightning, weights under ``"state_dict"``);
  ``encoder.down.{i}``, ``mid.{block_1,attn_1,block_2}``, ``decoder.up.{i}`` by level,
  a plain Euclidean codebook; ``loss.*`` (discriminator, LPIPS) dropped.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from vtok.convert.common import count_levels, rename, vq_codebook
from vtok.convert.registry import source


def _cnn_config(state: dict[str, torch.Tensor], prefix: str, level_re: str, block_name: str) -> dict[str, Any]:
    """ch, ch_mult, num_res_blocks, z_channels of a VQGAN-style CNN encoder from its weights."""
    ch = state[f"{prefix}.conv_in.weight"].shape[0]
    n = count_levels(state, rf"{prefix}\.{level_re}\.(\d+)\.")
    blocks = count_levels(state, rf"{prefix}\.{level_re}\.0\.{block_name}\.(\d+)\.")
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


@source("llamagen-vq", "LlamaGen VQ", marker="encoder.conv_blocks.0.")
def llamagen_vq(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
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
    mapped = {rename(k, rules): v for k, v in state.items()}
    # The source's training had no k-means init and no restarts; stated, so fine-tuning keeps its dynamics.
    quantizer = {"name": "vq", "dim": codes.shape[1], "codebook_size": codes.shape[0], "cosine": True, "ema": True,
                 "kmeans_init": False, "dead_code_share": 0.0}  # fmt: skip
    mapped.update(vq_codebook(F.normalize(codes.float(), dim=-1)))
    return _grid_config(enc, quantizer, mapped), mapped


@source("taming-vqgan", "taming VQGAN", marker="encoder.down.0.")
def taming_vqgan(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    state = {k: v for k, v in state.items() if not k.startswith("loss.")}
    enc = _cnn_config(state, "encoder", "down", "block")
    codes = state.pop("quantize.embedding.weight")
    quantizer = {"name": "vq", "dim": codes.shape[1], "codebook_size": codes.shape[0], "cosine": False, "ema": True,
                 "kmeans_init": False, "dead_code_share": 0.0}  # fmt: skip
    mapped = dict(state)
    mapped.update(vq_codebook(codes.float()))
    return _grid_config(enc, quantizer, mapped), mapped


def _grid_config(enc: dict[str, Any], quantizer: dict[str, Any], mapped: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The grid tokenizer's config, with attention at exactly the levels that carry attention weights."""
    n = len(enc["ch_mult"])
    enc = {**enc, "attn_levels": [i for i in range(n) if f"encoder.down.{i}.attn.0.q.weight" in mapped]}
    dec = {**enc, "attn_levels": [i for i in range(n) if f"decoder.up.{i}.attn.0.q.weight" in mapped]}
    return {"name": "grid", "encoder": enc, "quantizer": quantizer, "decoder": dec}
