"""LlamaGen's class-conditional GPT (weights under ``"model"``) as vtok's ``gpt``.

``tok_embeddings``, ``cls_embedding.embedding_table``, ``layers.{i}.attention.{wqkv,wo}``,
``feed_forward.{w1,w2,w3}``, ``{attention,ffn}_norm``, ``norm``, ``output``; the
``freqs_cis`` buffer is recomputed by vtok and dropped. Its rows for the class
position are zeros, which zero the class token's query and key: the converted
model sets ``zero_prefix_rotary``.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.convert.common import count_levels, rename
from vtok.convert.registry import source
from vtok.errors import VtokError

# n_head of LlamaGen's published GPT sizes, by width (head count is not in the weights).
LLAMAGEN_HEADS = {768: 12, 1024: 16, 1280: 20, 1536: 24, 2560: 40}


@source("llamagen-gpt", "LlamaGen GPT", marker="tok_embeddings.")
def llamagen_gpt(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    vocab, dim = state["tok_embeddings.weight"].shape
    if dim not in LLAMAGEN_HEADS:
        raise VtokError(f"width {dim} is not one of LlamaGen's GPT sizes ({sorted(LLAMAGEN_HEADS)}); heads unknown")
    depth = count_levels(state, r"layers\.(\d+)\.")
    classes = state["cls_embedding.embedding_table.weight"].shape[0] - 1
    grid = 16 if vocab >= 4096 else 8  # LlamaGen's c2i models: 256 tokens (VQ-16 at 256px)
    cfg = {"name": "gpt", "codebook_sizes": [vocab], "grid": [grid, grid], "num_classes": classes, "dim": dim,
           "depth": depth, "heads": LLAMAGEN_HEADS[dim], "zero_prefix_rotary": True}  # fmt: skip
    rules = [("tok_embeddings.", "tok_embeddings.0."), ("cls_embedding.embedding_table.", "cls_embedding."),
             (".attention.wqkv.", ".attention.qkv."), (".attention.wo.", ".attention.proj.")]  # fmt: skip
    return cfg, {rename(k, rules): v for k, v in state.items() if k != "freqs_cis"}
