"""The ViT of the 1D tokenizers (TiTok: Yu et al., "An Image is Worth 32 Tokens for Reconstruction and
Generation", 2024), shared by the ViT encoder and the ViT and flow decoders.

TiTok's transformer is a stack of pre-norm ViT blocks (Dosovitskiy et al., 2021) with a
bias on q, k and v: timm's ``Block``, onto whose parameter names TiTok's CLIP-style
weights are mapped (:mod:`vtok.convert.titok`). Patch features leave the network
through :func:`unpatchify`, the inverse of a p x p patch embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, POSITIVE, ranged


@dataclass
class ViTShape:
    """What the 1D encoder and decoder share: image and patch size, transformer shape, number of latent tokens."""

    image_size: int = ranged(256, AT_LEAST_1)
    patch_size: int = ranged(16, AT_LEAST_1)
    width: int = ranged(768, AT_LEAST_1)
    depth: int = ranged(12, AT_LEAST_1)
    heads: int = ranged(12, AT_LEAST_1)
    mlp_ratio: float = ranged(4.0, POSITIVE)
    num_latent_tokens: int = ranged(32, AT_LEAST_1)


def transformer_blocks(shape: ViTShape) -> nn.ModuleList:
    """``shape.depth`` timm ViT blocks of ``shape.width`` channels, ``shape.heads`` heads, a qkv bias (TiTok's).

    Each block maps (B, S, width) -> (B, S, width) and takes an optional ``attn_mask``.
    """
    # timm loads only when a ViT is built: importing vtok's parts stays light.
    from timm.models.vision_transformer import Block

    return nn.ModuleList(Block(shape.width, shape.heads, shape.mlp_ratio, qkv_bias=True) for _ in range(shape.depth))


def unpatchify(patches: torch.Tensor, grid: int, patch: int) -> torch.Tensor:
    """(B, grid*grid, 3*patch*patch) -> images (B, 3, grid*patch, grid*patch)."""
    return rearrange(patches, "b (h w) (c p q) -> b c (h p) (w q)", h=grid, p=patch, q=patch, c=3)
