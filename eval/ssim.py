"""SSIM (Wang et al. 2004): Gaussian window 11, sigma 1.5, on each RGB channel, then averaged.

Written out because none of vtok's dependencies has a batched torch SSIM; it equals
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=-1)`` (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vtok.config import AT_LEAST_1, POSITIVE, ranged
from vtok.eval.metric import PerImageMean, to_unit
from vtok.registry import register

K1, K2 = 0.01, 0.03


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)  # (size, size)


def ssim_per_image(real: torch.Tensor, fake: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """real, fake: (B, 3, H, W) in [-1, 1] -> (B,) SSIM on 8-bit RGB in [0, 1].

    The SSIM map is taken where the window fits entirely (no padding), averaged over
    positions and the three channels.
    """
    a, b = to_unit(real).double(), to_unit(fake).double()
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window}, got {tuple(a.shape[-2:])}")
    c = a.shape[1]
    w = _gaussian_window(window, sigma).to(a)[None, None].expand(c, 1, window, window)
    blur = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731  (B, C, H', W')
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = K1**2, K2**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.mean((1, 2, 3)).float()


@register("metric", "ssim")
class SSIM(PerImageMean):
    """Mean of per-image SSIM (see :func:`ssim_per_image`)."""

    column = "SSIM"

    @dataclass
    class Config:
        window: int = ranged(11, AT_LEAST_1)
        sigma: float = ranged(1.5, POSITIVE)

    def __init__(self, cfg: Config | None = None) -> None:
        self.cfg = cfg or self.Config()
        self.reset()

    def values(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return ssim_per_image(real, fake, self.cfg.window, self.cfg.sigma)

    def protocol(self) -> dict[str, Any]:
        return {
            "implementation": "vtok (equals scikit-image structural_similarity, gaussian_weights)",
            "window": f"Gaussian {self.cfg.window}x{self.cfg.window}, sigma {self.cfg.sigma}, valid positions only",
            "channels": "R, G, B separately on 8-bit values in [0, 1], then averaged",
            "constants": "K1 0.01, K2 0.03, data range 1",
            "images": self.count,
        }
