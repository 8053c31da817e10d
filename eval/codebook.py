"""Dataset-level codebook statistics of a tokenizer's tokens, per codebook / residual level.

Unlike batch statistics logged in training, usage here is the number of distinct
ids over the whole evaluated set divided by the codebook size: a code used once in
ten thousand images counts as used.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.stats import COLLAPSE_USAGE, CodeUsage, usage_verdict
from vtok.tokens import Tokens


class CodebookStats:
    """``reset / update(tokens) / compute()`` over every token the tokenizer emits for a set."""

    running = ("usage", "tokens_total", "images")  # merged across ranks like a metric's

    def __init__(self, codebook_sizes: tuple[int, ...]):
        self.usage = CodeUsage(codebook_sizes)
        self.reset()

    def reset(self) -> None:
        self.usage.reset()
        self.tokens_total = 0
        self.images = 0

    def update(self, tokens: Tokens) -> None:
        self.usage.update(tokens.ids, tokens.lengths)
        lengths = (
            tokens.lengths if tokens.lengths is not None else torch.full((tokens.batch_size,), tokens.num_positions)
        )
        self.tokens_total += int(lengths.sum())
        self.images += tokens.batch_size

    def compute(self) -> dict[str, float | str]:
        """Flat columns: ``usage``, ``perplexity``, ``entropy_bits`` and ``status`` ("collapsed" under 10% usage,
        else "healthy") for one codebook, else suffixed ``_c{i}``."""
        per = self.usage.compute()
        out: dict[str, float | str] = {}
        for i, stats in enumerate(per):
            suffix = "" if len(per) == 1 else f"_c{i}"
            out[f"usage{suffix}"] = stats["usage"]
            out[f"perplexity{suffix}"] = stats["perplexity"]
            out[f"entropy_bits{suffix}"] = stats["entropy_bits"]
            out[f"status{suffix}"] = usage_verdict(stats["usage"])
        out["tokens_per_image"] = self.tokens_total / max(self.images, 1)
        return out

    def protocol(self) -> dict[str, Any]:
        return {
            "implementation": "vtok",
            "usage": "distinct ids over the whole set / codebook size, per codebook (residual level)",
            "perplexity": "2 ** entropy (bits) of the dataset-level id histogram",
            "status": f"collapsed where usage < {COLLAPSE_USAGE:.0%}",
            "codebook_sizes": list(self.usage.codebook_sizes),
            "images": self.images,
        }
