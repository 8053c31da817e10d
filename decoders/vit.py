"""ViT decoder from a prefix of 1D tokens: quantized latents (mask tokens past each sample's length) + patch queries -> pixels.

Positions at or past a sample's kept length are replaced before decoding (by a
learned mask token, or as the ordering part says), so one batch may hold samples
of different lengths. With ``prefix_only`` they are instead left out of attention
altogether: the decoder computes exactly what it would on the shorter sequence
(how TiTok and One-D-Piece decode a prefix).

Patch outputs are unpatchified linearly (``conv_head`` adds a small CNN on the
pixels), or handed to a registered ``pixel_head`` (e.g. ``maskgit_vqgan``, TiTok's
proxy-code head and MaskGIT-VQGAN pixel decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vtok.config import NON_NEGATIVE, build_component, component, ranged
from vtok.errors import VtokError
from vtok.interfaces import Decoder
from vtok.nets.vit import ViTShape, transformer_blocks, unpatchify
from vtok.registry import register


class LatentDecoder(Decoder):
    """What every decoder of 1D token latents has: the token width it reads (``in_channels``),
    a learned ``mask_token`` the ordering part fills positions past a sample's length with,
    a position embedding per latent, and the patch ``grid`` it draws."""

    def __init__(self, cfg: ViTShape):
        super().__init__()
        self.cfg = cfg
        self.grid = cfg.image_size // cfg.patch_size
        self.in_channels = cfg.width
        self.mask_token = nn.Parameter(torch.zeros(cfg.width))
        self.latent_pos = nn.Parameter(torch.randn(1, cfg.num_latent_tokens, cfg.width) * 0.02)


@register("decoder", "vit1d")
class ViTLatentDecoder(LatentDecoder):
    """(B, N, code_dim) latents, with positions past ``lengths`` already filled -> (B, 3, H, W)."""

    @dataclass
    class Config(ViTShape):
        conv_head: int = ranged(0, NON_NEGATIVE)  # 3x3 conv layers after unpatchify (0: linear unpatchify only)
        class_token: bool = False  # a learned token beside the latents and patch queries (TiTok)
        prefix_only: bool = False  # leave positions past each length out of attention (see the module docstring)
        pixel_head: dict | None = component("pixel_head", optional=True)  # replaces the linear unpatchify

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.patch_queries = nn.Parameter(torch.randn(1, self.grid * self.grid, cfg.width) * 0.02)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.width) * 0.02) if cfg.class_token else None
        self.norm_pre = nn.LayerNorm(cfg.width)
        self.blocks = transformer_blocks(cfg)
        self.norm = nn.LayerNorm(cfg.width)
        if cfg.pixel_head is not None:
            if cfg.conv_head:
                raise VtokError("model.decoder: conv_head and pixel_head exclude each other")
            self.pixel_head = build_component("pixel_head", cfg.pixel_head, "model.decoder.pixel_head")
            if self.pixel_head.upsample_factor != cfg.patch_size:
                raise VtokError(
                    f"model.decoder.pixel_head upsamples x{self.pixel_head.upsample_factor}, "
                    f"but the patch size is {cfg.patch_size}"
                )
            if self.pixel_head.cfg.width != cfg.width:
                raise VtokError(f"model.decoder.pixel_head.width must equal the decoder width {cfg.width}")
            return
        self.to_pixels = nn.Linear(cfg.width, 3 * cfg.patch_size * cfg.patch_size)
        head: list[nn.Module] = []
        for _ in range(cfg.conv_head):
            head += [nn.Conv2d(3, 64, 3, padding=1), nn.SiLU(), nn.Conv2d(64, 3, 3, padding=1)]
        self.head = nn.Sequential(*head)

    def _attention_mask(self, lengths: torch.Tensor | None, extra: int, total: int) -> torch.Tensor | None:
        """(B, 1, 1, S) True where attention may look: everything but latents past each sample's length."""
        if not self.cfg.prefix_only or lengths is None:
            return None
        pos = torch.arange(total, device=lengths.device)[None, :] - extra  # latent index (negative: cls)
        drop = (pos >= lengths[:, None]) & (pos < self.cfg.num_latent_tokens)  # (B, S)
        return ~drop[:, None, None, :]

    def forward(self, latents: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """latents: (B, N, width), filled past each length; lengths: (B,) kept tokens -> images (B, 3, H, W)."""
        b = latents.shape[0]
        parts = [latents + self.latent_pos, self.patch_queries.expand(b, -1, -1)]
        if self.cls_token is not None:
            parts.insert(0, self.cls_token.expand(b, -1, -1))
        x = self.norm_pre(torch.cat(parts, dim=1))  # (B, [1 +] N + P, D)
        extra = int(self.cls_token is not None)
        mask = self._attention_mask(lengths, extra, x.shape[1])
        for block in self.blocks:
            x = block(x, attn_mask=mask)
        x = self.norm(x[:, extra + self.cfg.num_latent_tokens :])  # (B, P, D)
        if self.cfg.pixel_head is not None:
            return self.pixel_head(x, self.grid)
        images = unpatchify(self.to_pixels(x), self.grid, self.cfg.patch_size)  # (B, 3, H, W)
        return images + self.head(images) if self.cfg.conv_head else images

    @property
    def last_layer(self) -> torch.Tensor:
        return self.pixel_head.last_layer if self.cfg.pixel_head is not None else self.to_pixels.weight

    @torch.no_grad()
    def zero_output_(self) -> None:
        """Make the decoder's image exactly zero (the layers that write pixels at zero, the rest as they are)."""
        if self.cfg.pixel_head is not None:
            raise VtokError(
                "model.decoder: a pixel_head decoder cannot start at zero output; use the linear unpatchify"
            )
        last_conv = [m for m in self.head if isinstance(m, nn.Conv2d)][-1:]
        for layer in [self.to_pixels, *last_conv]:
            layer.weight.zero_()
            layer.bias.zero_()
