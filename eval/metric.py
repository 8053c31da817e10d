"""What every image metric is: a registered streaming object with its protocol.

``reset() / update(real, fake) / compute()``: ``update`` takes one batch of
originals and reconstructions, (B, 3, H, W) in [-1, 1], and keeps only running
sums; ``compute`` returns ``{column: value}``; ``protocol()`` says how the number
was made (implementation, weights and their hash, resize) so it is written beside
every score.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.errors import VtokError


class MetricUnavailable(VtokError):
    """A backend or its weights are missing here: the metric is skipped, with this one line as the reason."""


class Metric:
    """Base of the registered ``metric`` parts (see the module docstring)."""

    registry_name: str

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        raise NotImplementedError


def check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Originals and reconstructions must be batches of the same shape."""
    if real.shape != fake.shape:
        raise VtokError(f"originals {tuple(real.shape)} and reconstructions {tuple(fake.shape)} differ in shape")
    if real.ndim != 4 or real.shape[1] != 3:
        raise VtokError(f"expected images (B, 3, H, W), got {tuple(real.shape)}")


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> [0, 1] floats on 8-bit levels, the values a saved PNG holds."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
