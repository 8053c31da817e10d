"""TokenFlow's tokenizer as published (ByteFlow-AI/TokenFlow): a trained semantic encoder (CLIP, SigLIP or
ViTamin), one shared id over scales (``tokenflow_learned``), a pixel decoder on the pixel half and a ViT
semantic decoder on the other.

Checked against TokenFlow's code by ``vtok convert --from tokenflow`` (docs/converting.md). vtok's own
offline-trainable dual-codebook design, with a frozen teacher and conv adapters, is ``dual``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, build_component, component, ranged
from vtok.errors import VtokError
from vtok.interfaces import QuantizerOutput
from vtok.registry import register
from vtok.tokenizers.grid import GridTokenizer, check_images
from vtok.tokenizers.teachers import FrozenTeacherHolder
from vtok.tokens import Tokens


def _task_layer(cin: int, cout: int) -> nn.Sequential:
    """TokenFlow's task layer on tokens: Linear -> Tanh -> Linear."""
    return nn.Sequential(nn.Linear(cin, cin), nn.Tanh(), nn.Linear(cin, cout))


@register("model", "tokenflow")
class TokenFlowTokenizer(FrozenTeacherHolder, GridTokenizer):
    """TokenFlow as published (ByteFlow-AI/TokenFlow): a trained semantic encoder, one shared id, two decoders.

    images -> semantic encoder (a ViT, trained with the rest, so in the checkpoint) -> task layer
    (Linear, Tanh, Linear) -> semantic latents (D_sem); images -> CNN pixel encoder -> quant_conv -> pixel
    latents (D_pix); [semantic | pixel] -> ``tokenflow_learned``. Pixels are decoded from the pixel half
    alone (post_quant_conv -> CNN decoder); the semantic half goes to the ``semantic_decoder``, whose
    output is what ``semantic_features`` returns. Training distils the semantic decoder's output
    towards a frozen ``teacher`` (TokenFlow's clipb: OpenAI CLIP's projected patch tokens, the
    ``open_clip`` teacher) with TokenFlow's loss, 1 - cosine per position; like ``dual``'s, the
    teacher's weights are not in the checkpoint, its name and hash are. Without a teacher the model
    encodes and decodes but does not train.

    ``pixel_size`` (TokenFlow's SigLIP tokenizer): the semantic tower's grid is not the image size over
    the pixel encoder's factor (384 px at patch 14 gives 27 x 27; the CNN's factor is 16), so the pixel
    branch runs at ``pixel_size`` (16 x 27 = 432): images are bicubic-resized to it before the pixel
    encoder, and decoded images bicubic-resized back to the semantic encoder's ``image_size``.
    """

    @dataclass
    class Config(GridTokenizer.Config):
        # A quantizer of [semantic | pixel] latents (TokenFlow's tokenflow_learned: one shared id over scales)
        quantizer: dict = component("quantizer", {"name": "tokenflow_learned"})
        # The trained ViT the semantic half comes from (an encoder part; in the checkpoint)
        semantic_encoder: dict = component("encoder", {"name": "open_clip"})
        semantic_decoder: dict = component("semantic_decoder", {"name": "vit"})
        teacher: dict | None = component("teacher", optional=True)
        # Weight of the distillation loss 1 - cosine(semantic decoder output, teacher features)
        semantic_weight: float = ranged(1.0, NON_NEGATIVE)
        # The pixel branch's image size where it differs from the images' (see the class docstring); None: the same.
        pixel_size: int | None = ranged(None, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.semantic_dim = self.quantizer.semantic_dim
        # The pixel decoder reads the pixel half only (GridTokenizer's would read all D_sem + D_pix channels).
        self.post_quant_conv = nn.Conv2d(self.quantizer.pixel_dim, self.decoder.in_channels, 1)
        self.semantic_encoder = build_component("encoder", cfg.semantic_encoder, "model.semantic_encoder")
        self.semantic_in = _task_layer(self.semantic_encoder.out_channels, self.semantic_dim)
        self.semantic_decoder = build_component("semantic_decoder", cfg.semantic_decoder, "model.semantic_decoder")
        if self.semantic_decoder.in_channels != self.semantic_dim:
            raise VtokError(
                f"model.semantic_decoder.in_channels ({self.semantic_decoder.in_channels}) must equal "
                f"model.quantizer.semantic_dim ({self.semantic_dim})"
            )
        teacher = build_component("teacher", cfg.teacher, "model.teacher") if cfg.teacher else None
        if teacher is not None and teacher.channels != self.semantic_decoder.out_channels:
            raise VtokError(
                f"model.semantic_decoder.out_channels ({self.semantic_decoder.out_channels}) must equal the "
                f"teacher's channels ({teacher.channels})"
            )
        self.attach_teacher(teacher)
        self.semantic_weight = cfg.semantic_weight
        self.pixel_size = cfg.pixel_size
        self.image_size = getattr(self.semantic_encoder, "image_size", None)
        if cfg.pixel_size is not None and self.image_size is None:
            raise VtokError("model.pixel_size needs a semantic encoder with an image_size (the decoded images' size)")

    @property
    def pixel_code_dim(self) -> int:
        return self.quantizer.pixel_dim

    def _pixel_latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, D_pix, h, w); at ``pixel_size`` where it is set."""
        if self.pixel_size is not None:
            check_images(images, 1)
            images = F.interpolate(images, size=(self.pixel_size, self.pixel_size), mode="bicubic")  # (B, 3, P, P)
        return super()._pixel_latents(images)

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
        pixels = super()._render(z_q[..., self.semantic_dim :], grid)  # (B, 3, H, W) from the pixel half
        if self.pixel_size is not None:  # back from the pixel branch's size to the images'
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic")
        return pixels

    def _semantic(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        sem = rearrange(z_q[..., : self.semantic_dim], "b (h w) d -> b d h w", h=grid[0])
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
