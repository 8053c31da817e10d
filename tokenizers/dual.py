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

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import build_component, component
from vtok.errors import VtokError
from vtok.interfaces import QuantizerOutput
from vtok.layers import ResnetBlock
from vtok.registry import register
from vtok.tokenizers.grid import GridTokenizer
from vtok.tokens import Tokens


def _adapter(cin: int, width: int, cout: int, blocks: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, width, 1)]
    layers += [ResnetBlock(width, width) for _ in range(blocks)]
    layers += [nn.GroupNorm(min(32, width // 4), width, eps=1e-6), nn.SiLU(), nn.Conv2d(width, cout, 1)]
    return nn.Sequential(*layers)


@register("model", "dual")
class DualTokenizer(GridTokenizer):
    """Semantic + pixel tokens on one 2D grid (see the module docstring)."""

    @dataclass
    class Config(GridTokenizer.Config):
        quantizer: dict = component("quantizer", {"name": "tokenflow"})
        teacher: dict = component("teacher", {"name": "effnet_lite0"})
        adapter_width: int = 256
        adapter_blocks: int = 2
        semantic_weight: float = 1.0
        # Per training sample, the chance that the pixel decoder sees the semantic half zeroed. The decoder
        # then cannot lean on semantic codes alone for detail the pixel codes should carry: with few training
        # images, that reliance fits those images and costs held-out reconstruction.
        semantic_dropout: float = 0.0

    def __init__(self, cfg: Config):
        if not 0.0 <= cfg.semantic_dropout < 1.0:
            raise VtokError(f"model.semantic_dropout must be in [0, 1), got {cfg.semantic_dropout}")
        super().__init__(cfg)
        teacher = build_component("teacher", cfg.teacher, "model.teacher")
        # Kept out of the module tree: the teacher's weights come from its source, not from our checkpoint.
        object.__setattr__(self, "teacher", teacher)
        self.teacher_spec = {**teacher.spec, "weights_sha256": teacher.sha256}
        self.sem_dim = self.quantizer.sem_dim
        self.semantic_in = _adapter(teacher.channels, cfg.adapter_width, self.sem_dim, cfg.adapter_blocks)
        self.semantic_out = _adapter(self.sem_dim, cfg.adapter_width, teacher.channels, cfg.adapter_blocks)
        self.semantic_weight = cfg.semantic_weight
        self.semantic_dropout = cfg.semantic_dropout

    @property
    def pixel_code_dim(self) -> int:
        return self.quantizer.pix_dim

    # The saved config records the teacher's weights hash, so a reload checks it.
    @property
    def spec(self) -> dict[str, Any]:
        return self._spec

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        value = copy.deepcopy(value)
        value["teacher"] = self.teacher_spec
        object.__setattr__(self, "_spec", value)

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
        sem = rearrange(z_q[..., : self.sem_dim], "b (h w) d -> b d h w", h=grid[0])
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
        sem, pix = z_q[..., : self.sem_dim], z_q[..., self.sem_dim :]
        return torch.cat([sem * keep.to(sem.dtype), pix], dim=-1)

    def _training_terms(
        self, q: QuantizerOutput, grid: tuple[int, int], teacher: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        predicted = self._semantic(q.z_q, grid)
        cosine = F.cosine_similarity(predicted.float(), teacher.float(), dim=1).mean()
        losses = {**q.losses, "semantic": self.semantic_weight * (1 - cosine)}
        return losses, {**q.stats, "semantic_cosine": cosine.detach()}


def _task_layer(cin: int, cout: int) -> nn.Sequential:
    """TokenFlow's task layer on tokens: Linear -> Tanh -> Linear."""
    return nn.Sequential(nn.Linear(cin, cin), nn.Tanh(), nn.Linear(cin, cout))


@register("model", "tokenflow")
class TokenFlowTokenizer(GridTokenizer):
    """TokenFlow as published (ByteFlow-AI/TokenFlow): a trained semantic encoder, one shared id, two decoders.

    images -> semantic encoder (a CLIP ViT, trained with the rest, so in the checkpoint) -> task layer
    (Linear, Tanh, Linear) -> semantic latents (D_sem); images -> CNN pixel encoder -> quant_conv -> pixel
    latents (D_pix); [semantic | pixel] -> ``tokenflow_learned``. Pixels are decoded from the pixel half
    alone (post_quant_conv -> CNN decoder); the semantic half goes to the ``semantic_decoder``, whose
    output is what ``semantic_features`` returns. Training distils the semantic decoder's output
    towards a frozen ``teacher`` (TokenFlow's clipb: OpenAI CLIP's projected patch tokens, the
    ``open_clip`` teacher) with TokenFlow's loss, 1 - cosine per position; like ``dual``'s, the
    teacher's weights are not in the checkpoint, its name and hash are. Without a teacher the model
    encodes and decodes but does not train.
    """

    @dataclass
    class Config(GridTokenizer.Config):
        quantizer: dict = component("quantizer", {"name": "tokenflow_learned"})
        semantic_encoder: dict = component("encoder", {"name": "open_clip"})
        semantic_decoder: dict = component("semantic_decoder", {"name": "vit"})
        teacher: dict | None = component("teacher", optional=True)
        semantic_weight: float = 1.0

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.sem_dim = self.quantizer.sem_dim
        # The pixel decoder reads the pixel half only (GridTokenizer's would read all D_sem + D_pix channels).
        self.post_quant_conv = nn.Conv2d(self.quantizer.pix_dim, self.decoder.in_channels, 1)
        self.semantic_encoder = build_component("encoder", cfg.semantic_encoder, "model.semantic_encoder")
        self.semantic_in = _task_layer(self.semantic_encoder.out_channels, self.sem_dim)
        self.semantic_decoder = build_component("semantic_decoder", cfg.semantic_decoder, "model.semantic_decoder")
        if self.semantic_decoder.in_channels != self.sem_dim:
            raise VtokError(
                f"model.semantic_decoder.in_channels ({self.semantic_decoder.in_channels}) must equal "
                f"model.quantizer.semantic_dim ({self.sem_dim})"
            )
        teacher = build_component("teacher", cfg.teacher, "model.teacher") if cfg.teacher else None
        if teacher is not None and teacher.channels != self.semantic_decoder.out_channels:
            raise VtokError(
                f"model.semantic_decoder.out_channels ({self.semantic_decoder.out_channels}) must equal the "
                f"teacher's channels ({teacher.channels})"
            )
        object.__setattr__(self, "teacher", teacher)  # frozen, from its source: not in the module tree
        self.teacher_spec = {**teacher.spec, "weights_sha256": teacher.sha256} if teacher is not None else None
        self.semantic_weight = cfg.semantic_weight

    @property
    def spec(self) -> dict[str, Any]:
        return self._spec

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        value = copy.deepcopy(value)
        if self.teacher_spec is not None:  # the saved config records the teacher's weights hash
            value["teacher"] = self.teacher_spec
        object.__setattr__(self, "_spec", value)

    @property
    def pixel_code_dim(self) -> int:
        return self.quantizer.pix_dim

    def _latents(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor]:
        pix = self._pixel_latents(images)  # (B, D_pix, h, w)
        feats = self.semantic_encoder(images)  # (B, C_enc, h', w')
        if feats.shape[-2:] != pix.shape[-2:]:
            raise VtokError(
                f"semantic grid {tuple(feats.shape[-2:])} differs from the pixel grid {tuple(pix.shape[-2:])}: "
                "set the semantic encoder's image_size to the images' size"
            )
        sem = self.semantic_in(rearrange(feats, "b c h w -> b (h w) c"))  # (B, L, D_sem)
        z = torch.cat([sem, rearrange(pix, "b d h w -> b (h w) d")], dim=-1)  # (B, L, D_sem + D_pix)
        return z, (pix.shape[2], pix.shape[3]), images

    def _render(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return super()._render(z_q[..., self.sem_dim :], grid)  # (B, 3, H, W) from the pixel half

    def _semantic(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        sem = rearrange(z_q[..., : self.sem_dim], "b (h w) d -> b d h w", h=grid[0])
        return self.semantic_decoder(sem)  # (B, C_sem_out, h, w)

    def semantic_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, h*w, C): the semantic decoder's features, what an understanding model reads."""
        self._check(tokens)
        return rearrange(self._semantic(self.quantizer.lookup(tokens.ids), tokens.grid), "b c h w -> b (h w) c")

    def _training_terms(
        self, q: QuantizerOutput, grid: tuple[int, int], images: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if not self.training:
            return q.losses, q.stats
        if self.teacher is None:
            raise VtokError("training the tokenflow model needs model.teacher (its semantic decoder's target)")
        self.teacher.to(images.device)
        target = self.teacher(images)  # (B, C, h', w')
        if target.shape[-2:] != grid:
            target = F.interpolate(target, size=grid, mode="bilinear", align_corners=False)
        cosine = F.cosine_similarity(self._semantic(q.z_q, grid).float(), target.float(), dim=1).mean()
        losses = {**q.losses, "semantic": self.semantic_weight * (1 - cosine)}
        return losses, {**q.stats, "semantic_cosine": cosine.detach()}
