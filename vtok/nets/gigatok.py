"""GigaTok's hybrid tokenizer blocks (Xiong et al., "GigaTok: Scaling Visual Tokenizers to 3 Billion Parameters
for Autoregressive Image Generation", 2025), shared by the ``gigatok`` and ``gigatok2d`` encoders and
decoders.

A GigaTok 1D tokenizer is a CNN, a Q-Former and a CNN again: the CNN encoder writes a
(B, z_channels, g, g) feature grid; a Q-Former (DETR's pre-norm decoder layer: self-
attention among queries, cross-attention to the memory, an MLP) turns it into N 1D
tokens; after quantization a second Q-Former turns the N tokens back into g*g grid
features, and the CNN decoder draws the pixels. The 2D tokenizers put transformers over
the g*g grid (:func:`grid_layers`) in the Q-Formers' places, one token a cell. The blocks
compute exactly the functions of the published code, which differs from vtok's VQGAN CNNs
(:mod:`vtok.nets.vqgan`) in two ways a released checkpoint depends on: no attention anywhere (the mid block is two
residual blocks), and the decoder's levels start with MAGVIT-v2's adaptive group norm
and upsample by a conv to 4x the channels then depth-to-space
(:mod:`vtok.nets.magvit2`). Module names follow GigaTok's, so its weights map by prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, POSITIVE, UNIT, ranged
from vtok.errors import VtokError
from vtok.nets.magvit2 import AdaptiveGroupNorm, DepthToSpaceUpsample
from vtok.nets.vqgan import Downsample, ResnetBlock, group_norm


@dataclass
class GigaTokShape:
    """What GigaTok's encoders and decoders share: image size, the CNN (base width, width multiplier a level, one
    level a factor 2, residual blocks a level, grid channels) and the transformer (width, depth, heads, MLP ratio).
    Defaults: the released S-size side at 256 px."""

    # Side of the square images in pixels (a multiple of the CNN's factor 2^(len(ch_mult) - 1))
    image_size: int = ranged(256, AT_LEAST_1)
    ch: int = ranged(128, AT_LEAST_1)  # base channels of the CNN; level i has ch x ch_mult[i] (multiples of 32)
    # Channel multiplier per CNN level; a factor 2 between levels
    ch_mult: list[int] = ranged([1, 1, 2, 2, 4], AT_LEAST_1)
    num_res_blocks: int = ranged(2, AT_LEAST_1)  # residual blocks per CNN level
    # Channels of the latents between encoder and decoder (of the CNN grid's positions, or of each 1D token)
    z_channels: int = ranged(256, AT_LEAST_1)
    width: int = ranged(512, AT_LEAST_1)  # transformer width (a multiple of heads)
    depth: int = ranged(6, AT_LEAST_1)  # transformer layers
    heads: int = ranged(8, AT_LEAST_1)  # attention heads per layer
    mlp_ratio: float = ranged(4.0, POSITIVE)  # hidden width of each layer's MLP, as a multiple of width
    # Dropout in the CNN's residual blocks and the transformer layers (training only)
    dropout: float = ranged(0.0, UNIT)

    def __post_init__(self) -> None:
        factor = 2 ** (len(self.ch_mult) - 1)
        if any(self.ch * m % 32 for m in self.ch_mult):
            raise VtokError(f"ch x ch_mult ({self.ch} x {self.ch_mult}) must be multiples of 32 (GroupNorm's groups)")
        if self.image_size % factor:
            raise VtokError(f"image_size {self.image_size} is not a multiple of the CNN's factor {factor}")
        if self.width % self.heads:
            raise VtokError(f"width {self.width} does not split into {self.heads} heads")

    @property
    def grid(self) -> int:
        """Side of the CNN's feature grid (image_size / 2 ** (len(ch_mult) - 1))."""
        return self.image_size // 2 ** (len(self.ch_mult) - 1)


@dataclass
class GigaTok2DShape(GigaTokShape):
    """GigaTok's 2D encoders and decoders: its shape plus which transformer layer type runs on the grid."""

    # GigaTok's TransformerDecoderLayer (its 2D default; the released S-S 2D config): each layer is the Q-Former
    # layer reading the grid as queries and as memory, positions on queries and keys at every layer. Off: plain
    # transformer layers, positions added once (TransformerLayer: the S-B and B-L 2D configs).
    qformer_layers: bool = False


@dataclass
class GigaTok1DShape(GigaTokShape):
    """GigaTokShape with the number of 1D tokens (default: the released 256)."""

    # 1D tokens per image: a power of two whose finest query level's blocks divide the CNN grid
    num_latent_tokens: int = ranged(256, AT_LEAST_1)

    def __post_init__(self) -> None:
        super().__post_init__()
        levels = self.num_latent_tokens.bit_length() - 1
        grid = self.grid
        cols, rows = 2 ** (levels // 2), 2 ** (max(levels - 1, 0) // 2)  # the finest query level's blocks
        if 2**levels != self.num_latent_tokens or grid % cols or grid % rows:
            raise VtokError(
                f"num_latent_tokens {self.num_latent_tokens} must be a power of two whose finest query level "
                f"({rows}x{cols} blocks) divides the {grid}x{grid} grid (GigaTok's multi-level queries)"
            )


class QFormerLayer(nn.Module):
    """DETR's decoder layer, pre-norm: queries attend to themselves, then to the memory, then an MLP (GELU).

    Positions are added to the queries and keys of both attentions, never to the values.
    Attention is ``nn.MultiheadAttention`` (GigaTok's released setting: no q/k norm, no RoPE).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.multihead_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(width, int(width * mlp_ratio))
        self.linear2 = nn.Linear(int(width * mlp_ratio), width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.norm3 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        queries: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor,
        memory_pos: torch.Tensor,
        memory_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """queries (B, Q, D), memory (B, M, D), positions (1 or B, Q or M, D); memory_padding (B, M) True where
        a memory position is left out of attention -> (B, Q, D)."""
        h = self.norm1(queries)
        q = h + query_pos
        queries = queries + self.dropout(self.self_attn(q, q, h, need_weights=False)[0])  # (B, Q, D)
        h = self.norm2(queries)
        keys = memory + memory_pos
        attn = self.multihead_attn(h + query_pos, keys, memory, key_padding_mask=memory_padding, need_weights=False)
        queries = queries + self.dropout(attn[0])  # (B, Q, D)
        mlp = self.linear2(self.dropout(F.gelu(self.linear1(self.norm3(queries)))))
        return queries + self.dropout(mlp)


class TransformerLayer(nn.Module):
    """A pre-norm transformer layer (GigaTok's 2D tokenizers): self-attention, then a GELU MLP, each residual.

    Positions are added once before the first layer, not here (GigaTok's ``TransformerLayer``).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(width, int(width * mlp_ratio))
        self.linear2 = nn.Linear(int(width * mlp_ratio), width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, L, D) -> (B, L, D)."""
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, need_weights=False)[0])  # (B, L, D)
        return x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(x))))))


def grid_layers(layers: nn.ModuleList, x: torch.Tensor, pos: torch.Tensor, qformer_layers: bool) -> torch.Tensor:
    """GigaTok's 2D transformer over grid cells: x (B, g*g, D), pos (1, g*g, D) -> (B, g*g, D).

    ``qformer_layers``: Q-Former layers reading the grid as queries and memory, positions at every layer
    (GigaTok's TransformerDecoderLayer); else plain layers after the positions are added once (TransformerLayer).
    """
    if qformer_layers:
        for layer in layers:
            x = layer(x, x, pos, pos)
        return x
    x = x + pos
    for layer in layers:
        x = layer(x)
    return x


def multi_level_queries(grid: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """GigaTok's 1D query init: (B, C, H, W) -> (B, num_tokens, C) block averages, coarse to fine.

    num_tokens = 2**n: the whole-grid mean twice, then level k = 1 .. n-1 splits the grid into
    2**ceil(k/2) columns by 2**floor(k/2) rows (the width first), each block's mean in raster
    order; 1 + 1 + 2 + ... + 2**(n-1) = 2**n tokens.
    """
    h, w = grid.shape[-2:]
    levels = num_tokens.bit_length() - 1
    parts = []
    for group in range(levels + 1):
        level = max(group - 1, 0)
        rows, cols = 2 ** (level // 2), 2 ** ((level + 1) // 2)
        pooled = F.avg_pool2d(grid, kernel_size=(h // rows, w // cols))  # (B, C, rows, cols)
        parts.append(rearrange(pooled, "b c h w -> b (h w) c"))
    return torch.cat(parts, dim=1)  # (B, N, C)


class CNNEncoder(nn.Module):
    """conv_in -> per level: residual blocks, a stride-2 downsample (all but the last) -> two residual
    blocks -> norm -> swish -> conv_out to ``z_channels``. No attention (GigaTok's ``use_attn: false``)."""

    def __init__(self, shape: GigaTokShape, in_channels: int = 3):
        super().__init__()
        ch = shape.ch
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        channels = ch
        for level, mult in enumerate(shape.ch_mult):
            stage = nn.Module()
            stage.res = nn.ModuleList()
            for _ in range(shape.num_res_blocks):
                stage.res.append(ResnetBlock(channels, ch * mult, shape.dropout))
                channels = ch * mult
            if level != len(shape.ch_mult) - 1:
                stage.downsample = Downsample(channels)
            self.conv_blocks.append(stage)
        self.mid = nn.ModuleList(ResnetBlock(channels, channels, shape.dropout) for _ in range(2))
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, shape.z_channels, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, z_channels, H/f, W/f)."""
        h = self.conv_in(images)  # (B, ch, H, W)
        for stage in self.conv_blocks:
            for block in stage.res:
                h = block(h)
            if hasattr(stage, "downsample"):
                h = stage.downsample(h)  # (B, C, H/2, W/2)
        for block in self.mid:
            h = block(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, z, h, w)


class CNNDecoder(nn.Module):
    """conv_in -> two residual blocks -> per level from the lowest resolution: adaptive group norm on the
    input grid's statistics, ``num_res_blocks + 1`` residual blocks, conv + depth-to-space x2 (all but the
    last) -> norm -> swish -> conv_out. ``conv_blocks[i]`` and ``adaptive[i]`` are the i-th level run."""

    def __init__(self, shape: GigaTokShape, out_channels: int = 3):
        super().__init__()
        ch = shape.ch
        channels = ch * shape.ch_mult[-1]
        self.conv_in = nn.Conv2d(shape.z_channels, channels, 3, padding=1)
        self.mid = nn.ModuleList(ResnetBlock(channels, channels, shape.dropout) for _ in range(2))
        self.conv_blocks = nn.ModuleList()
        self.adaptive = nn.ModuleList()
        for level in reversed(range(len(shape.ch_mult))):
            self.adaptive.append(AdaptiveGroupNorm(shape.z_channels, channels))
            stage = nn.Module()
            stage.res = nn.ModuleList()
            for _ in range(shape.num_res_blocks + 1):
                stage.res.append(ResnetBlock(channels, ch * shape.ch_mult[level], shape.dropout))
                channels = ch * shape.ch_mult[level]
            if level != 0:
                stage.upsample = DepthToSpaceUpsample(channels)
            self.conv_blocks.append(stage)
        self.norm_out = group_norm(channels)
        self.conv_out = nn.Conv2d(channels, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, z_channels, h, w) -> (B, 3, h*f, w*f), unbounded (about [-1, 1])."""
        h = self.conv_in(z)  # (B, C, h, w)
        for block in self.mid:
            h = block(h)
        for norm, stage in zip(self.adaptive, self.conv_blocks):
            h = norm(h, z)  # scale and shift from z's per-channel spread and mean
            for block in stage.res:
                h = block(h)
            if hasattr(stage, "upsample"):
                h = stage.upsample(h)  # (B, C, 2h, 2w)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, 3, H, W)
