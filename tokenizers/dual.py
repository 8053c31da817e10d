"""Dual-codebook tokenizers (TokenFlow, DualToken): semantic codes for understanding, pixel codes for generation.

images -> frozen pretrained teacher -> semantic adapter -> semantic latents (D_sem)
images -> CNN pixel encoder -> quant_conv          -> pixel latents (D_pix)
[semantic | pixel] -> quantizer (``tokenflow``: one shared id per position over
scales; ``dual_rvq``: separate ids) -> pixel decoder (from both halves) and a
semantic decoder (from the semantic half) that predicts the teacher's features.

``semantic_features(tokens)`` gives those predicted teacher features, what an
understanding model reads, without decoding pixels. The semantic loss is
1 - cosine(predicted, teacher) per position. The teacher's weights are not part of
the checkpoint; its name and weights hash are (see :mod:`vtok.tokenizers.teachers`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from vtok.tokenizers.grid import check_images

from vtok.config import build_component, component
from vtok.errors import VtokError
from vtok.interfaces import Tokenizer, TokenizerOutput
from vtok.layers import ResnetBlock
from vtok.registry import register
from vtok.tokens import Tokens


def _adapter(cin: int, width: int, cout: int, blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, width, 1)]
    layers += [ResnetBlock(width, width) for _ in range(blocks)]
    layers += [nn.GroupNorm(min(32, width // 4), width, eps=1e-6), nn.SiLU(), nn.Conv2d(width, cout, 1)]
    return nn.Sequential(*layers)


@register("model", "dual")
class DualTokenizer(Tokenizer):
    """Semantic + pixel tokens on one 2D grid (see the module docstring)."""

    @dataclass
    class Config:
        teacher: dict = component("teacher", {"name": "effnet_lite0"})
        pixel_encoder: dict = component("encoder", {"name": "conv"})
        quantizer: dict = component("quantizer", {"name": "tokenflow"})
        decoder: dict = component("decoder", {"name": "conv"})
        adapter_width: int = 256
        adapter_blocks: int = 2
        semantic_weight: float = 1.0
        # Per training sample, the chance that the pixel decoder sees the semantic half zeroed. The decoder
        # then cannot lean on semantic codes alone for detail the pixel codes should carry: with few training
        # images, that reliance fits those images and costs held-out reconstruction.
        semantic_dropout: float = 0.0

    def __init__(self, cfg: Config):
        super().__init__()
        teacher = build_component("teacher", cfg.teacher, "model.teacher")
        # Kept out of the module tree: the teacher's weights come from its source, not from our checkpoint.
        object.__setattr__(self, "teacher", teacher)
        self.teacher_spec = {**teacher.spec, "weights_sha256": teacher.sha256}
        self.pixel_encoder = build_component("encoder", cfg.pixel_encoder, "model.pixel_encoder")
        self.quantizer = build_component("quantizer", cfg.quantizer, "model.quantizer")
        self.decoder = build_component("decoder", cfg.decoder, "model.decoder")
        self.sem_dim, self.pix_dim = self.quantizer.sem_dim, self.quantizer.pix_dim
        self.downsample_factor = self.pixel_encoder.downsample_factor
        self.semantic_in = _adapter(teacher.channels, cfg.adapter_width, self.sem_dim, cfg.adapter_blocks)
        self.semantic_out = _adapter(self.sem_dim, cfg.adapter_width, teacher.channels, cfg.adapter_blocks)
        self.quant_conv = nn.Conv2d(self.pixel_encoder.out_channels, self.pix_dim, 1)
        self.post_quant_conv = nn.Conv2d(self.quantizer.dim, self.decoder.in_channels, 1)
        self.semantic_weight = cfg.semantic_weight
        if not 0.0 <= cfg.semantic_dropout < 1.0:
            raise VtokError(f"model.semantic_dropout must be in [0, 1), got {cfg.semantic_dropout}")
        self.semantic_dropout = cfg.semantic_dropout

    # The saved config records the teacher's weights hash, so a reload checks it.
    @property
    def spec(self) -> dict[str, Any]:
        return self._spec

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        value = copy.deepcopy(value)
        value["teacher"] = self.teacher_spec
        object.__setattr__(self, "_spec", value)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return self.quantizer.codebook_sizes

    def _layout(self, grid: tuple[int, int]) -> dict[str, Any]:
        scales = getattr(self.quantizer, "token_scales", None)
        return {"grid": grid, "scales": scales}

    def teacher_features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> (B, C_t, h, w): the frozen teacher's features on the token grid."""
        self.teacher.to(images.device)
        feats = self.teacher(images)  # (B, C_t, h', w')
        if feats.shape[-2:] != grid:
            feats = F.interpolate(feats, size=grid, mode="bilinear", align_corners=False)
        return feats

    def _latents(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        check_images(images, self.downsample_factor)
        pix = self.quant_conv(self.pixel_encoder(images))  # (B, D_pix, h, w)
        grid = (pix.shape[2], pix.shape[3])
        teacher = self.teacher_features(images, grid)  # (B, C_t, h, w)
        sem = self.semantic_in(teacher)  # (B, D_sem, h, w)
        z = rearrange(torch.cat([sem, pix], 1), "b d h w -> b (h w) d")  # (B, L, D_sem + D_pix)
        return z, teacher, grid

    def encode(self, images: torch.Tensor, num_tokens: int | None = None) -> Tokens:
        """images: (B, 3, H, W) in [-1, 1] -> Tokens (shared ids over scales, or semantic + pixel ids)."""
        if num_tokens is not None:
            raise VtokError("a dual-codebook tokenizer emits a fixed number of tokens; num_tokens is for 1D tokenizers")
        z, _, grid = self._latents(images)
        ids = self.quantizer.quantize_ids(z)
        return Tokens(ids=ids, codebook_sizes=self.codebook_sizes, **self._layout(grid))

    def _check(self, tokens: Tokens) -> None:
        if tokens.codebook_sizes != self.codebook_sizes or tokens.grid is None:
            raise VtokError(
                f"tokens (codebooks {tokens.codebook_sizes}, grid {tokens.grid}) do not fit this tokenizer "
                f"(codebooks {self.codebook_sizes})"
            )
        tokens.check_range()

    def _grid_latents(self, tokens: Tokens) -> torch.Tensor:
        """(B, h*w, D_sem + D_pix) quantized latents on the grid (all scales summed)."""
        self._check(tokens)
        return self.quantizer.lookup(tokens.ids)

    def lookup(self, tokens: Tokens) -> torch.Tensor:
        """(B, L, D_sem + D_pix): one latent per token (a multi-scale token's own code), for the AR side."""
        if hasattr(self.quantizer, "code_vectors"):
            self._check(tokens)
            return self.quantizer.code_vectors(tokens.ids)
        return self._grid_latents(tokens)

    def _decode(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        z = rearrange(z_q, "b (h w) d -> b d h w", h=grid[0])
        return self.decoder(self.post_quant_conv(z))  # (B, 3, H, W)

    def _semantic(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        sem = rearrange(z_q[..., : self.sem_dim], "b (h w) d -> b d h w", h=grid[0])
        return self.semantic_out(sem)  # (B, C_t, h, w)

    def _drop_semantic(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, L, D_sem + D_pix) -> the same with the semantic half zeroed for a random subset of samples."""
        if not self.training or self.semantic_dropout == 0.0:
            return z_q
        keep = torch.rand(z_q.shape[0], 1, 1, device=z_q.device) >= self.semantic_dropout  # (B, 1, 1)
        sem, pix = z_q[..., : self.sem_dim], z_q[..., self.sem_dim :]
        return torch.cat([sem * keep.to(sem.dtype), pix], dim=-1)

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, 3, H, W) images in [-1, 1] (clamped)."""
        return self._decode(self._grid_latents(tokens), tokens.grid).clamp(-1, 1)

    def semantic_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, h*w, C_teacher): the teacher-space features an understanding model reads."""
        sem = self._semantic(self._grid_latents(tokens), tokens.grid)
        return rearrange(sem, "b c h w -> b (h w) c")

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Training pass: recon (unclamped), tokens, losses (quantizer + weighted semantic), stats."""
        z, teacher, grid = self._latents(images)
        q = self.quantizer(z)
        recon = self._decode(self._drop_semantic(q.z_q), grid)
        predicted = self._semantic(q.z_q, grid)
        cosine = F.cosine_similarity(predicted.float(), teacher.float(), dim=1).mean()
        losses = {**q.losses, "semantic": self.semantic_weight * (1 - cosine)}
        stats = {**q.stats, "semantic_cosine": cosine.detach()}
        tokens = Tokens(ids=q.ids, codebook_sizes=self.codebook_sizes, **self._layout(grid))
        return TokenizerOutput(recon=recon, tokens=tokens, losses=losses, stats=stats)

    def last_decoder_weight(self) -> torch.Tensor:
        return self.decoder.last_layer
