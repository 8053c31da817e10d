"""TokenFlow's semantic decoder: semantic codes on the token grid -> features in the semantic encoder's space.

BEiT-v2's VQ-KD decoder as TokenFlow configures it: a ViT over the code grid with
1x1 patches (``in_channels`` -> ``width``), a class token and a learned position
table, ``depth`` pre-norm blocks (LayerNorm eps 1e-6, q and v biases, exact GELU),
a final LayerNorm on the patch tokens (BEiT's ``fc_norm`` with mean pooling), then
the task head Linear -> Tanh -> Linear to ``out_channels``. The ViT is timm's ``Beit``
(BEiT's own parameter names; the k bias a fixed zero buffer, as in BEiT).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.registry import register


@register("semantic_decoder", "vit")
class SemanticViTDecoder(nn.Module):
    """(B, in_channels, g, g) semantic codes -> (B, out_channels, g, g) predicted semantic features."""

    @dataclass
    class Config:
        # Channels of the semantic codes it reads (the quantizer's semantic_dim)
        in_channels: int = ranged(32, AT_LEAST_1)
        out_channels: int = ranged(512, AT_LEAST_1)  # channels of the predicted features (the teacher's)
        width: int = ranged(768, AT_LEAST_1)  # transformer width
        depth: int = ranged(3, AT_LEAST_1)  # transformer blocks
        heads: int = ranged(12, AT_LEAST_1)  # attention heads per block
        grid: int = ranged(16, AT_LEAST_1)  # the token grid's side; the position table has grid^2 + 1 rows

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.compat import ensure_torchvision

        ensure_torchvision()
        from timm.models.beit import Beit

        if cfg.width % cfg.heads:
            raise VtokError("semantic_decoder vit: width must be a multiple of heads")
        self.grid = cfg.grid
        self.in_channels, self.out_channels = cfg.in_channels, cfg.out_channels
        self.vit = Beit(
            img_size=cfg.grid, patch_size=1, in_chans=cfg.in_channels, num_classes=0, global_pool="avg",
            embed_dim=cfg.width, depth=cfg.depth, num_heads=cfg.heads, mlp_ratio=4.0, qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=1e-6), use_abs_pos_emb=True, use_fc_norm=True,
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.Tanh(), nn.Linear(cfg.width, cfg.out_channels))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, in_channels, g, g) -> (B, out_channels, g, g)."""
        if tuple(codes.shape[-2:]) != (self.grid, self.grid):
            raise VtokError(f"semantic decoder expects a {self.grid}x{self.grid} grid, got {tuple(codes.shape[-2:])}")
        tokens = self.vit.forward_features(codes)  # (B, 1 + g*g, width); its final norm is the identity here
        tokens = self.vit.fc_norm(tokens[:, 1:])  # (B, g*g, width): the class token left out
        return rearrange(self.head(tokens), "b (h w) c -> b c h w", h=self.grid)  # (B, out_channels, g, g)
