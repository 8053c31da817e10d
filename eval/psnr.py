"""PSNR as a streaming metric: per image on [0, 1], then averaged over images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vtok.eval.metric import PerImageMean, to_unit
from vtok.registry import register


def psnr_per_image(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """real, fake: (B, 3, H, W) in [-1, 1] -> (B,) PSNR in dB on the [0, 1] scale.

    Both are first rounded to 8-bit levels, so the number is that of the PNG files a
    user would compare. Identical images give +inf.
    """
    mse = (to_unit(real) - to_unit(fake)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


@register("metric", "psnr")
class PSNR(PerImageMean):
    """``reset / update(real, fake) / compute()``: the mean of per-image PSNRs."""

    column = "PSNR"

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None) -> None:
        self.reset()

    def values(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return psnr_per_image(real, fake)

    def protocol(self) -> dict[str, Any]:
        return {
            "implementation": "vtok",
            "range": "8-bit RGB scaled to [0, 1]",
            "reduction": "mean of per-image PSNR (dB)",
            "images": self.count,
        }
