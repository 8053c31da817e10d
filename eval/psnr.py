"""PSNR as a streaming metric: per image on [0, 1], then averaged over images."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vtok.eval.metric import PerImageMean, to_unit
from vtok.registry import register

PSNR_CAP_DB = 100.0
PSNR_PROTOCOL = "per image, 8-bit RGB on [0, 1], capped at 100 dB (identical images)"


def psnr_per_image(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """real, fake: (B, 3, H, W) in [-1, 1] -> (B,) PSNR in dB on the [0, 1] scale.

    Both are first rounded to 8-bit levels, so the number is that of the PNG files a
    user would compare. Capped at 100 dB (identical images): an infinite value would
    hide every other image in a mean.
    """
    mse = (to_unit(real) - to_unit(fake)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=10 ** (-PSNR_CAP_DB / 10)))


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
            "cap": f"{PSNR_CAP_DB:g} dB (an identical image), so one perfect image cannot make the mean infinite",
            "images": self.count,
        }
