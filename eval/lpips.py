"""LPIPS v0.1 from the ``lpips`` package: AlexNet for the metric (as in the literature), VGG available.

The package ships its linear heads, but the AlexNet/VGG backbones are torchvision
weights that download from the PyTorch server. Where they are not in the torch hub
cache the metric is unavailable (skipped with one line); it is never computed with
random backbone weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch

from vtok.backbones import torch_hub_file
from vtok.eval.metric import Metric, MetricUnavailable, check_pair
from vtok.registry import register

BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}


@register("metric", "lpips")
class LPIPS(Metric):
    """Mean LPIPS distance between originals and reconstructions (lower is better)."""

    running = ("total", "count")

    @dataclass
    class Config:
        net: str = "alex"
        device: str = "cpu"

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg or self.Config()
        if self.cfg.net not in BACKBONE_FILES:
            raise MetricUnavailable(f"LPIPS net must be one of {sorted(BACKBONE_FILES)}, got {self.cfg.net!r}")
        self.weights = torch_hub_file(BACKBONE_FILES[self.cfg.net])
        if not self.weights.is_file():
            raise MetricUnavailable(
                f"torchvision {self.cfg.net} weights are not at {self.weights} (they download from "
                "download.pytorch.org); never computed with random weights"
            )
        from vtok.compat import ensure_torchvision

        ensure_torchvision()
        import lpips

        self.net = lpips.LPIPS(net=self.cfg.net, verbose=False).eval().requires_grad_(False).to(self.cfg.device)
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    @torch.inference_mode()
    def distances(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """(B,) LPIPS distance of each pair; real, fake: [B, 3, H, W] in [-1, 1]."""
        check_pair(real, fake)
        return self.net(real.float().to(self.cfg.device), fake.float().to(self.cfg.device)).flatten()

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        d = self.distances(real, fake)
        self.total += float(d.double().sum())
        self.count += d.numel()

    def compute(self) -> dict[str, float]:
        return {f"LPIPS_{self.cfg.net}": self.total / self.count}

    def protocol(self) -> dict[str, Any]:
        return {
            "implementation": f"lpips 0.1 package, net={self.cfg.net}, v0.1 heads",
            "weights": str(self.weights),
            "images": self.count,
        }


@functools.cache
def load_lpips(net: str = "alex", device: str = "cpu") -> LPIPS:
    """The LPIPS metric, loaded once per (net, device); :class:`MetricUnavailable` without its weights."""
    return LPIPS(LPIPS.Config(net=net, device=device))


def lpips_per_image(real: torch.Tensor, fake: torch.Tensor, net: str = "alex") -> torch.Tensor:
    """(B,) LPIPS distance of each pair; real, fake: [B, 3, H, W] in [-1, 1].

    The network is loaded once per (net, device). Raises :class:`MetricUnavailable`
    (one line) where the backbone weights are missing.
    """
    return load_lpips(net, real.device.type).distances(real, fake).cpu()
