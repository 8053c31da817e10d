"""A CLIP ViT from open_clip as a trainable semantic encoder: images -> patch-token features on the token grid.

TokenFlow's ``clipb_224`` tokenizer starts its semantic encoder from OpenAI's CLIP
ViT-B/16 and trains it with the rest, so its weights belong to the tokenizer's
checkpoint (unlike a frozen teacher, :mod:`vtok.tokenizers.teachers`). open_clip's
``VisionTransformer`` is OpenAI's CLIP vision tower with the same parameter names;
the patch tokens are read after ``ln_post``, and the projection to the joint
embedding space (which TokenFlow deletes) is dropped.

Offline the tower is built with random weights from open_clip's model config;
``pretrained`` (e.g. ``"openai"``) fetches the released weights through open_clip
(the Hub), with the position table resized to ``image_size`` by open_clip.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from vtok.config import AT_LEAST_1, POSITIVE, UNIT, ranged
from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.registry import register


@register("encoder", "open_clip")
class OpenClipEncoder(Encoder):
    """images (B, 3, H, W) in [-1, 1] -> (B, width, H / patch, W / patch) CLIP patch features."""

    @dataclass
    class Config:
        model: str = "ViT-B-16"  # an open_clip model name; its vision tower is used
        pretrained: str | None = None  # None: random weights (converted checkpoints bring their own)
        # Side of the square input images (the only size taken; the position table is built for it)
        image_size: int = ranged(224, AT_LEAST_1)
        quick_gelu: bool = True  # OpenAI's CLIP weights were trained with QuickGELU
        # Optional changes to the named model's vision tower (random weights only; heads = width // 64).
        width: int | None = ranged(None, AT_LEAST_1)
        layers: int | None = ranged(None, AT_LEAST_1)  # transformer blocks of the tower (null: the named model's)
        # Side of the tower's square patches (null: the named model's)
        patch_size: int | None = ranged(None, AT_LEAST_1)
        # Per-channel normalisation of the [0, 1] image; None feeds the [-1, 1] image as it is (TokenFlow's CLIP).
        mean: list[float] | None = ranged(None, UNIT)
        std: list[float] | None = ranged(None, POSITIVE)  # per-channel std of that normalisation (with mean)

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.compat import ensure_torchvision

        ensure_torchvision()  # open_clip imports torchvision
        try:
            import open_clip
            from open_clip.model import _build_vision_tower
        except ImportError:
            raise VtokError(
                "the open_clip encoder needs the open_clip_torch package (pip install open_clip_torch)"
            ) from None

        if (cfg.mean is None) != (cfg.std is None):
            raise VtokError("open_clip encoder: give mean and std together, or neither")
        if cfg.pretrained is None:
            model_cfg = open_clip.get_model_config(cfg.model)
            if model_cfg is None:
                raise VtokError(f"open_clip encoder: unknown model {cfg.model!r}")
            sizes = {"width": cfg.width, "layers": cfg.layers, "patch_size": cfg.patch_size}
            vision = {**model_cfg["vision_cfg"], "image_size": cfg.image_size}
            vision.update({k: v for k, v in sizes.items() if v is not None})
            self.net = _build_vision_tower(model_cfg["embed_dim"], vision, quick_gelu=cfg.quick_gelu)
        elif (cfg.width, cfg.layers, cfg.patch_size) != (None, None, None):
            raise VtokError("open_clip encoder: width / layers / patch_size change random towers only, not pretrained")
        else:
            try:
                model = open_clip.create_model(
                    cfg.model,
                    pretrained=cfg.pretrained,
                    force_image_size=cfg.image_size,
                    force_quick_gelu=cfg.quick_gelu,
                )
            except Exception as err:  # hub unreachable, unknown tag: one line, no traceback
                raise VtokError(
                    f"open_clip encoder {cfg.model!r} ({cfg.pretrained}) could not be loaded ({err})"
                ) from None
            self.net = model.visual
        self.net.proj = None  # patch features stay in the tower's width
        self.net.output_tokens = True
        if cfg.mean is not None:
            self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)
        self.normalise = cfg.mean is not None
        self.image_size = cfg.image_size
        self.out_channels = self.net.conv1.out_channels
        self.downsample_factor = self.net.conv1.kernel_size[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] at ``image_size`` -> (B, width, h, w) patch features after ln_post."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise VtokError(f"open_clip encoder takes {self.image_size}px images, got {tuple(images.shape[-2:])}")
        x = ((images + 1) / 2 - self.mean) / self.std if self.normalise else images
        _, tokens = self.net(x)  # (B, h*w, width): the class token left out
        side = self.image_size // self.downsample_factor
        return rearrange(tokens, "b (h w) c -> b c h w", h=side)
