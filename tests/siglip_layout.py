"""Random tensors in transformers' ``SiglipVisionModel`` key layout, shared by the converter tests of the
models that hold a SigLIP tower (DualToken, TokenFlow's SigLIP tokenizer).

The draw order is part of the contract, as in ``tests/taming_cnn.py``: a test's expected values depend on it.
"""

from __future__ import annotations

import torch

from tests.taming_cnn import randconv, randlin, randnorm


def rand_siglip_vision(
    s: dict[str, torch.Tensor], prefix: str, width: int, depth: int, mlp: int, patch: int, grid: int
) -> None:
    """Fill ``s`` with a SigLIP vision tower under ``prefix`` (``...vision_model``), pooling head included."""
    randconv(s, f"{prefix}.embeddings.patch_embedding", 3, width, patch)
    s[f"{prefix}.embeddings.position_embedding.weight"] = torch.randn(grid * grid, width) * 0.1
    for i in range(depth):
        b = f"{prefix}.encoder.layers.{i}"
        randnorm(s, f"{b}.layer_norm1", width), randnorm(s, f"{b}.layer_norm2", width)
        for p in ("q_proj", "k_proj", "v_proj", "out_proj"):
            randlin(s, f"{b}.self_attn.{p}", width, width)
        randlin(s, f"{b}.mlp.fc1", width, mlp), randlin(s, f"{b}.mlp.fc2", mlp, width)
    randnorm(s, f"{prefix}.post_layernorm", width)
    s[f"{prefix}.head.probe"] = torch.randn(1, 1, width)
    s[f"{prefix}.head.attention.in_proj_weight"] = torch.randn(3 * width, width) / width**0.5
    s[f"{prefix}.head.attention.in_proj_bias"] = torch.randn(3 * width) * 0.05
    randlin(s, f"{prefix}.head.attention.out_proj", width, width), randnorm(s, f"{prefix}.head.layernorm", width)
    randlin(s, f"{prefix}.head.mlp.fc1", width, mlp), randlin(s, f"{prefix}.head.mlp.fc2", mlp, width)
