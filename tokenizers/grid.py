"""Tokenizers over a 2D latent grid: CNN (or any) encoder -> quantizer -> decoder.

The VQ family (VQGAN, LlamaGen) is this composition with the ``vq`` quantizer;
swapping the quantizer part gives the other grid families without a new class. The
dual-codebook family (:mod:`vtok.tokenizers.dual`) subclasses it and overrides only
how latents are made and what the training pass adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, build_component, component, ranged
from vtok.errors import VtokError
from vtok.interfaces import QuantizerOutput, Tokenizer, TokenizerOutput
from vtok.registry import register
from vtok.tokens import Tokens


def check_images(images: torch.Tensor, multiple: int) -> None:
    """One-line errors for tensors that are not a batch of RGB images of a usable size."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise VtokError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise VtokError(f"images must be float in [-1, 1], got {images.dtype}")
    h, w = images.shape[-2:]
    if h % multiple or w % multiple:
        raise VtokError(f"image size {h}x{w} is not a multiple of the tokenizer's downsampling factor {multiple}")


@register("model", "grid")
class GridTokenizer(Tokenizer):
    """encoder -> quant_conv (to the code dim) -> quantizer -> post_quant_conv -> decoder.

    Tokens are (B, h*w, C) in raster order with ``grid = (h, w)`` (multi-scale
    quantizers: every scale's positions, coarse to fine, with ``scales``).
    """

    part_of = {"quant_conv": "encoder", "post_quant_conv": "decoder"}

    @dataclass
    class Config:
        encoder: dict = component("encoder", {"name": "conv"})  # images -> a latent grid (an encoder part)
        # The grid's latents -> codes (a quantizer part); its dim is the code width
        quantizer: dict = component("quantizer", {"name": "vq"})
        decoder: dict = component("decoder", {"name": "conv"})  # quantized latents -> images (a decoder part)
        quant_conv_kernel: int = ranged(1, AT_LEAST_1)  # 3 in VAR's VQVAE; 1 (a linear map per position) elsewhere

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.quant_conv_kernel % 2 == 0:
            raise VtokError("model.quant_conv_kernel must be odd (the latent grid keeps its size)")
        self.encoder = build_component("encoder", cfg.encoder, "model.encoder")
        self.quantizer = build_component("quantizer", cfg.quantizer, "model.quantizer")
        self.decoder = build_component("decoder", cfg.decoder, "model.decoder")
        k = cfg.quant_conv_kernel
        self.quant_conv = nn.Conv2d(self.encoder.out_channels, self.pixel_code_dim, k, padding=k // 2)
        self.post_quant_conv = nn.Conv2d(self.quantizer.dim, self.decoder.in_channels, k, padding=k // 2)
        self.downsample_factor = self.encoder.downsample_factor

    @property
    def pixel_code_dim(self) -> int:
        """Channels of the encoder's quantized latents."""
        return self.quantizer.dim

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return self.quantizer.codebook_sizes

    # --- latents ---------------------------------------------------------------------

    def _pixel_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, D_pix, h, w)."""
        check_images(images, self.downsample_factor)
        return self.quant_conv(self.encoder(images))

    def _latents(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], Any]:
        """images -> (B, L, D) latents to quantize, the grid (h, w), and what the training pass needs besides."""
        z = self._pixel_latents(images)  # (B, D, h, w)
        return rearrange(z, "b d h w -> b (h w) d"), (z.shape[2], z.shape[3]), None

    def quantizer_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) in [-1, 1] -> (B, L, D) latents before quantization."""
        return self._latents(images)[0]

    def _tokens(self, ids: torch.Tensor, grid: tuple[int, int]) -> Tokens:
        return Tokens(ids=ids, codebook_sizes=self.codebook_sizes, grid=grid, scales=self.quantizer.token_scales)

    def _check(self, tokens: Tokens) -> None:
        sizes = self.codebook_sizes
        # Residual quantizers decode from any first d levels (Tokens.levels(d)).
        fits = tokens.codebook_sizes == sizes or (
            self.quantizer.prefix_decodable
            and 0 < len(tokens.codebook_sizes) < len(sizes)
            and tokens.codebook_sizes == sizes[: len(tokens.codebook_sizes)]
        )
        if tokens.grid is None or not fits:
            raise VtokError(
                f"tokens (codebooks {tokens.codebook_sizes}, grid {tokens.grid}) do not fit this tokenizer "
                f"(codebooks {sizes}, 2D grid)"
            )
        tokens.check_range()

    def _render(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, h*w, D) quantized latents -> (B, 3, H, W), unclamped."""
        z = rearrange(z_q, "b (h w) d -> b d h w", h=grid[0], w=grid[1])
        return self.decoder(self.post_quant_conv(z.to(self.post_quant_conv.weight.dtype)))  # (B, 3, H, W)

    # --- the interface ---------------------------------------------------------------

    def encode(self, images: torch.Tensor, num_tokens: int | None = None) -> Tokens:
        """images: (B, 3, H, W) in [-1, 1] -> Tokens with ids (B, L, C), grid (h, w)."""
        if num_tokens is not None:
            raise VtokError("a grid tokenizer always emits h*w tokens; num_tokens is for 1D tokenizers")
        z, grid, _ = self._latents(images)  # (B, L, D)
        return self._tokens(self.quantizer.quantize_ids(z), grid)  # ids (B, L', C)

    def lookup(self, tokens: Tokens) -> torch.Tensor:
        """(B, L', D): one quantized latent per token (a multi-scale token's own code), for the AR side."""
        self._check(tokens)
        return self.quantizer.code_vectors(tokens.ids)

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, 3, H, W) images in [-1, 1] (clamped)."""
        self._check(tokens)
        return self._render(self.quantizer.lookup(tokens.ids), tokens.grid).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Training pass: recon (B, 3, H, W) (unclamped), tokens, losses and stats."""
        z, grid, extra = self._latents(images)  # (B, L, D)
        q = self.quantizer(z)
        recon = self._render(self._training_latents(q.z_q), grid)
        losses, stats = self._training_terms(q, grid, extra)
        return TokenizerOutput(recon=recon, tokens=self._tokens(q.ids, grid), losses=losses, stats=stats)

    def _training_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """What the decoder sees in the training pass (the quantized latents as they are)."""
        return z_q

    def _training_terms(
        self, q: QuantizerOutput, grid: tuple[int, int], extra: Any
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The training pass's losses and stats beyond the reconstruction (the quantizer's own)."""
        return q.losses, q.stats

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer
