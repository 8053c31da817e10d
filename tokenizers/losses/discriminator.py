"""PatchGAN discriminator (pix2pix / taming-transformers' NLayerDiscriminator)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.registry import register


@register("discriminator", "patchgan")
class PatchGAN(nn.Module):
    """Strided 4x4 convs with BatchNorm and LeakyReLU(0.2): one logit per overlapping patch."""

    @dataclass
    class Config:
        ndf: int = ranged(64, AT_LEAST_1)  # channels of the first conv; each later layer doubles them, up to 8 x ndf
        # Conv layers after the first (all but the last stride 2): more layers, larger patches per logit
        n_layers: int = ranged(3, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, cfg.ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, cfg.n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < cfg.n_layers else 1
            layers += [
                nn.Conv2d(cfg.ndf * prev, cfg.ndf * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(cfg.ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(cfg.ndf * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN initialisation, as the reference
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images: (B, 3, H, W) -> logits (B, 1, h, w)."""
        return self.main(images)
