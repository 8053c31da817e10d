"""PSNR as a streaming metric: per image on [0, 1], then averaged over images."""

from __future__ import annotations

import torch


def psnr_per_image(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """real, fake: (B, 3, H, W) in [-1, 1] -> (B,) PSNR in dB on the [0, 1] scale.

    Both are first rounded to 8-bit levels, so the number is that of the PNG files a
    user would compare. Identical images give +inf.
    """
    a = ((real.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
    b = ((fake.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
    mse = (a - b).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse)


class PSNR:
    """``reset / update(real, fake) / compute()``: the mean of per-image PSNRs."""

    name = "psnr"

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        values = psnr_per_image(real, fake)
        self.total += float(values.double().sum())
        self.count += values.numel()
        return values

    def compute(self) -> float:
        if self.count == 0:
            raise ValueError("PSNR of no images")
        return self.total / self.count
