"""Dual-codebook tokenizers (TokenFlow, DualToken): semantic codes for understanding, pixel codes for generation.

images -> frozen pretrained teacher -> semantic adapter -> semantic latents (D_sem)
images -> CNN pixel encoder -> quant_conv          -> pixel latents (D_pix)
[semantic | pixel] -> quantizer (``tokenflow``: one shared id per position over
scales; ``dual_rvq``: separate ids) -> pixel decoder (from both halves) and a
semantic decoder (from the semantic half) that predicts the teacher's features.

A :class:`GridTokenizer` that overrides how latents are made and what the training
pass adds. ``semantic_features(tokens)`` gives the predicted teacher features, what
an understanding model reads, without decoding pixels. The semantic loss is
1 - cosine(predicted, teacher) per position. The teacher's weights are not part of
the checkpoint; its name and weights hash are (see :mod:`vtok.tokenizers.teachers`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, Range, build_component, component, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.nets.vqgan import ResnetBlock
from vtok.registry import register
from vtok.tokenizers.grid import GridTokenizer
from vtok.tokenizers.teachers import FrozenTeacherHolder
from vtok.tokens import Tokens


def dual_dims(quantizer: Quantizer) -> tuple[int, int]:
    """(semantic_dim, pixel_dim) of a quantizer whose latents are [semantic | pixel]; a one-line error otherwise."""
    missing = [k for k in ("semantic_dim", "pixel_dim") if getattr(quantizer, k) is None]
    if missing:
        name = getattr(quantizer, "registry_name", type(quantizer).__name__)
        raise VtokError(
            f"model.quantizer: the dual tokenizer needs a quantizer with semantic and pixel halves (tokenflow, "
            f"dual_rvq); {name} declares no {' and no '.join(missing)}"
        )
    return quantizer.semantic_dim, quantizer.pixel_dim


def _adapter(cin: int, width: int, cout: int, blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, width, 1)]
    layers += [ResnetBlock(width, width) for _ in range(blocks)]
    layers += [nn.GroupNorm(min(32, width // 4), width, eps=1e-6), nn.SiLU(), nn.Conv2d(width, cout, 1)]
    return nn.Sequential(*layers)


@register("model", "dual")
class DualTokenizer(FrozenTeacherHolder, GridTokenizer):
    """Semantic + pixel tokens on one 2D grid (see the module docstring)."""

    @dataclass
    class Config(GridTokenizer.Config):
        # A quantizer of [semantic | pixel] latents (tokenflow: one shared id; dual_rvq: separate ids)
        quantizer: dict = component("quantizer", {"name": "tokenflow"})
        # The frozen pretrained network the semantic half is read from (a teacher part; not in the checkpoint)
        teacher: dict = component("teacher", {"name": "effnet_lite0"})
        # Channels of the semantic adapters (teacher features -> semantic latents, and back)
        adapter_width: int = ranged(256, AT_LEAST_1)
        adapter_blocks: int = ranged(2, NON_NEGATIVE)  # residual blocks in each of those adapters
        # Weight of the semantic loss 1 - cosine(predicted, teacher features)
        semantic_weight: float = ranged(1.0, NON_NEGATIVE)
        # Per training sample, the chance that the pixel decoder sees the semantic half zeroed. The decoder
        # then cannot lean on semantic codes alone for detail the pixel codes should carry: with few training
        # images, that reliance fits those images and costs held-out reconstruction.
        semantic_dropout: float = ranged(0.0, Range(0, 1, high_open=True))  # a share dropped: never all

    def __init__(self, cfg: Config):
        if not 0.0 <= cfg.semantic_dropout < 1.0:
            raise VtokError(f"model.semantic_dropout must be in [0, 1), got {cfg.semantic_dropout}")
        super().__init__(cfg)
        teacher = build_component("teacher", cfg.teacher, "model.teacher")
        self.attach_teacher(teacher)
        self.semantic_dim = dual_dims(self.quantizer)[0]
        self.semantic_in = _adapter(teacher.channels, cfg.adapter_width, self.semantic_dim, cfg.adapter_blocks)
        self.semantic_out = _adapter(self.semantic_dim, cfg.adapter_width, teacher.channels, cfg.adapter_blocks)
        self.semantic_weight = cfg.semantic_weight
        self.semantic_dropout = cfg.semantic_dropout

    @property
    def pixel_code_dim(self) -> int:
        """Channels of the pixel encoder's latents: the quantizer's pixel half."""
        return dual_dims(self.quantizer)[1]

    def teacher_features(self, images: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> (B, C_t, h, w): the frozen teacher's features on the token grid."""
        self.teacher.to(images.device)
        feats = self.teacher(images)  # (B, C_t, h', w')
        if feats.shape[-2:] != grid:
            feats = F.interpolate(feats, size=grid, mode="bilinear", align_corners=False)
        return feats

    def _latents(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
        pix = self._pixel_latents(images)  # (B, D_pix, h, w)
        grid = (pix.shape[2], pix.shape[3])
        teacher = self.teacher_features(images, grid)  # (B, C_t, h, w)
        sem = self.semantic_in(teacher)  # (B, D_sem, h, w)
        z = rearrange(torch.cat([sem, pix], 1), "b d h w -> b (h w) d")  # (B, L, D_sem + D_pix)
        return z, grid, teacher

    def _semantic(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        sem = rearrange(z_q[..., : self.semantic_dim], "b (h w) d -> b d h w", h=grid[0])
        return self.semantic_out(sem)  # (B, C_t, h, w)

    def semantic_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, h*w, C_teacher): the teacher-space features an understanding model reads."""
        self._check(tokens)
        sem = self._semantic(self.quantizer.lookup(tokens.ids), tokens.grid)
        return rearrange(sem, "b c h w -> b (h w) c")

    def _training_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, L, D_sem + D_pix) -> the same with the semantic half zeroed for a random subset of samples."""
        if not self.training or self.semantic_dropout == 0.0:
            return z_q
        keep = torch.rand(z_q.shape[0], 1, 1, device=z_q.device) >= self.semantic_dropout  # (B, 1, 1)
        sem, pix = z_q[..., : self.semantic_dim], z_q[..., self.semantic_dim :]
        return torch.cat([sem * keep.to(sem.dtype), pix], dim=-1)

    def _training_terms(
        self, q: QuantizerOutput, grid: tuple[int, int], teacher: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        predicted = self._semantic(q.z_q, grid)
        cosine = F.cosine_similarity(predicted.float(), teacher.float(), dim=1).mean()
        losses = {**q.losses, "semantic": self.semantic_weight * (1 - cosine)}
        return losses, {**q.stats, "semantic_cosine": cosine.detach()}
