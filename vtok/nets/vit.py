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

    # Side of the square images in pixels: the encoder refuses other sizes, the decoder draws this size
    image_size: int = ranged(256, AT_LEAST_1)
    # Side of a square patch in pixels (image_size must be a multiple): (image_size / patch_size)^2 patches
    patch_size: int = ranged(16, AT_LEAST_1)
    width: int = ranged(768, AT_LEAST_1)  # channels of every token in the transformer
    depth: int = ranged(12, AT_LEAST_1)  # transformer blocks (timm's ViT Block, qkv bias)
    heads: int = ranged(12, AT_LEAST_1)  # attention heads per block (width must be a multiple)
    mlp_ratio: float = ranged(4.0, POSITIVE)  # hidden width of each block's MLP, as a multiple of width
    # 1D tokens per image: the latent tokens the encoder reads out, the positions the decoder reads
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
