"""What every image metric is: a registered streaming object with its protocol.

``reset() / update(real, fake) / compute()``: ``update`` takes one batch of
originals and reconstructions, (B, 3, H, W) in [-1, 1], and keeps only running
sums; ``compute`` returns ``{column: value}``; ``protocol()`` says how the number
was made (implementation, weights and their hash, resize) so it is written beside
every score.
"""

from __future__ import annotations

import heapq
from typing import Any

import torch

from vtok.errors import VtokError


class MetricUnavailable(VtokError):
    """A backend or its weights are missing here: the metric is skipped, with this one line as the reason."""


class Metric:
    """Base of the registered ``metric`` parts (see the module docstring).

    ``running`` names the attributes that hold the running state: what ranks send to
    rank 0 to be merged (:func:`merge_running`), never the networks.
    """

    registry_name: str
    running: tuple[str, ...] = ()

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError

    def protocol(self) -> dict[str, Any]:
        raise NotImplementedError


def running_state(metric: Any) -> dict[str, Any]:
    """The running state of a metric (its ``running`` attributes), small enough to send between ranks."""
    return {name: getattr(metric, name) for name in metric.running}


def merge_running(metric: Any, states: list[dict[str, Any]]) -> None:
    """Fold other ranks' running states into ``metric``, in order (theirs come after its own images).

    Objects with a ``merge`` method (feature statistics, reservoirs, histograms) merge
    themselves; counts and sums add.
    """
    for state in states:
        for name, value in state.items():
            mine = getattr(metric, name)
            if value is None:
                continue
            if hasattr(mine, "merge"):
                mine.merge(value)
            else:
                setattr(metric, name, mine + value)


def check_pair(real: torch.Tensor, fake: torch.Tensor) -> None:
    """Originals and reconstructions must be batches of the same shape."""
    if real.shape != fake.shape:
        raise VtokError(f"originals {tuple(real.shape)} and reconstructions {tuple(fake.shape)} differ in shape")
    if real.ndim != 4 or real.shape[1] != 3:
        raise VtokError(f"expected images (B, 3, H, W), got {tuple(real.shape)}")


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> [0, 1] floats on 8-bit levels, the values a saved PNG holds."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 255.0


class WorstCases:
    """The ``k`` worst items seen (highest ``badness``), each with its original and reconstruction crops."""

    def __init__(self, k: int):
        self.k = k
        self.heap: list[tuple[float, int, Any, Any, Any]] = []
        self.seen = 0

    def offer(self, badness: float, item: Any, original, recon) -> None:
        self.seen += 1
        entry = (badness, self.seen, item, original, recon)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, entry)
        elif entry > self.heap[0]:
            heapq.heapreplace(self.heap, entry)

    def pairs(self) -> list[tuple[Any, Any, Any]]:
        """(item, original crop, reconstruction crop), worst first."""
        return [(item, a, b) for _, _, item, a, b in sorted(self.heap, reverse=True)]


class PerImageMean(Metric):
    """A metric that is the mean over images of ``per_image(real, fake) -> (B,)``."""

    column: str
    running = ("total", "count")

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        check_pair(real, fake)
        values = self.values(real, fake)
        self.total += float(values.double().sum())
        self.count += values.numel()
        return values

    def values(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            raise VtokError(f"{self.column} of no images")
        return {self.column: self.total / self.count}
