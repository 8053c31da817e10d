"""timm's ViTamin tower as it is, read as TokenFlow's ViTamin tokenizer reads it.

TokenFlow's ``vitamin_xlarge_256`` tokenizer (ByteFlow-AI/TokenFlow) builds timm's registered
``vitamin_xlarge_256`` (a stem and two MBConv stages to stride 8, a strided convolution to
stride 16, then 32 ViT blocks of width 1152 with timm's GeGLU MLPs; no position table, no
class token), deletes its pooling norm (``fc_norm``) and classifier (``head``), and reads
``forward_features``: with average pooling timm's final ``norm`` is the identity, so the tokens
are the last block's output. Images are scaled as TokenFlow's ``ScalingLayerForClip`` does:
to the 8-bit range and clamped, to [0, 1], then CLIP's mean and std.

This is timm's model unchanged (its GeGLU uses the block's exact GELU); UniTok's ViTamin
(:mod:`vtok.nets.unitok`, the ``unitok`` encoder) is UniTok's own copy, with a tanh GELU in
the GeGLU, no final norm and a projection, so it is not this tower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.registry import register

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@register("encoder", "timm_vitamin")
class TimmVitaminEncoder(Encoder):
    """images (B, 3, S, S) in [-1, 1] -> (B, width, S / 16, S / 16): the ViT's tokens after its last block."""

    @dataclass
    class Config:
        model: str = "vitamin_xlarge_256"  # a timm ViTamin name
        # Side of the square input images (the only size taken; the position table is built for it)
        image_size: int = ranged(256, AT_LEAST_1)
        # Optional changes to the named tower (random weights; tests' tiny towers): the ViT's width, depth and
        # heads; the stem's width, the two MBConv stages' widths and depths (all three or none).
        width: int | None = ranged(None, AT_LEAST_1)
        depth: int | None = ranged(None, AT_LEAST_1)  # transformer blocks of the tower (null: the named model's)
        heads: int | None = ranged(None, AT_LEAST_1)  # attention heads per block (null: the named model's)
        stem_width: int | None = ranged(None, AT_LEAST_1)  # the convolutional stem's width (null: the named model's)
        # The widths of the two MBConv stages (null: the named model's)
        stage_dims: list[int] | None = ranged(None, AT_LEAST_1)
        # The blocks of the two MBConv stages (null: the named model's)
        stage_depths: list[int] | None = ranged(None, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.compat import ensure_torchvision

        ensure_torchvision()  # timm imports torchvision
        import timm
        from timm.models.vitamin import VitCfg, VitConvCfg

        sizes = {"embed_dim": cfg.width, "depth": cfg.depth, "num_heads": cfg.heads}
        kwargs = {k: v for k, v in sizes.items() if v is not None}
        stem = (cfg.stem_width, cfg.stage_dims, cfg.stage_depths)
        if any(v is not None for v in stem):
            if None in stem or len(cfg.stage_dims) != 2 or len(cfg.stage_depths) != 2 or cfg.width is None:
                raise VtokError(
                    "timm_vitamin encoder: give stem_width, 2 stage_dims, 2 stage_depths and width together"
                )
            conv = VitConvCfg(norm_layer="layernorm2d", norm_eps=1e-6)  # timm's ViTamin settings
            dims = (*cfg.stage_dims, cfg.width)
            kwargs["embed_cfg"] = VitCfg(embed_dim=dims, depths=(*cfg.stage_depths, 1), stem_width=cfg.stem_width,
                                         conv_cfg=conv, head_type="1d")  # fmt: skip
        try:
            self.net = timm.create_model(cfg.model, pretrained=False, img_size=cfg.image_size, **kwargs)
        except (RuntimeError, ValueError, TypeError, AssertionError) as err:  # unknown name, sizes that do not fit
            raise VtokError(f"timm_vitamin encoder {cfg.model!r} could not be built ({err})") from None
        if not hasattr(self.net.patch_embed, "backbone") or self.net.num_prefix_tokens:
            raise VtokError(
                f"timm_vitamin encoder: {cfg.model!r} is not a ViTamin tower (a hybrid stem, no class token)"
            )
        self.net.fc_norm, self.net.head = nn.Identity(), nn.Identity()  # deleted by TokenFlow: the tokens are read
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)
        self.image_size = cfg.image_size
        self.out_channels = self.net.embed_dim
        self.downsample_factor = 16  # the stem (2), two MBConv stages (2, 2) and the strided convolution (2)
        self.grid = tuple(self.net.patch_embed.grid_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> (B, width, S / 16, S / 16)."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise VtokError(f"timm_vitamin encoder takes {self.image_size}px images, got {tuple(images.shape[-2:])}")
        x = ((images + 1.0) * 127.5).clamp(0, 255.0) / 255.0  # TokenFlow's scaling: via the 8-bit range, to [0, 1]
        tokens = self.net.forward_features((x - self.mean) / self.std)  # (B, h*w, width)
        return rearrange(tokens, "b (h w) c -> b c h w", h=self.grid[0])
