"""Dataset-level codebook statistics, accumulated batch by batch."""

from __future__ import annotations

import math

import torch


class CodeUsage:
    """Counts code ids over many batches; usage, entropy and perplexity per codebook.

    ``update(ids)`` takes (B, L, C) ids (an optional (B,) ``lengths`` masks padded
    1D positions); ``compute()`` returns, for each codebook c, the share of codes
    used at least once, the entropy (bits) of the id histogram and its perplexity
    (2 ** entropy), plus the total count.
    """

    def __init__(self, codebook_sizes: tuple[int, ...]):
        self.codebook_sizes = tuple(codebook_sizes)
        self.reset()

    def reset(self) -> None:
        self.counts = [torch.zeros(size, dtype=torch.float64) for size in self.codebook_sizes]

    def update(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> None:
        ids = ids.detach().cpu()
        mask = None
        if lengths is not None:
            mask = torch.arange(ids.shape[1])[None, :] < lengths.cpu()[:, None]  # (B, L)
        for c, size in enumerate(self.codebook_sizes):
            column = ids[..., c] if mask is None else ids[..., c][mask]
            column = column[column >= 0]  # -1: a residual level skipped by quantize dropout
            self.counts[c] += torch.bincount(column.reshape(-1), minlength=size).double()

    def merge(self, other: CodeUsage) -> None:
        """Add another rank's histograms."""
        for mine, theirs in zip(self.counts, other.counts, strict=True):
            mine += theirs

    def compute(self) -> list[dict[str, float]]:
        out = []
        for counts in self.counts:
            total = float(counts.sum())
            p = counts / max(total, 1.0)
            nz = p[p > 0]
            entropy = float(-(nz * nz.log2()).sum())
            out.append(
                {
                    "usage": float((counts > 0).double().mean()),
                    "distinct": int((counts > 0).sum()),
                    "entropy_bits": entropy,
                    "perplexity": 2.0**entropy,
                    "max_entropy_bits": math.log2(len(counts)),
                    "count": total,
                }
            )
        return out


COLLAPSE_USAGE = 0.1


def usage_verdict(usage: float, threshold: float = COLLAPSE_USAGE) -> str:
    """Codebook usage in words: a user reads "collapsed" where a share might be overlooked."""
    return f"collapsed ({usage:.1%} of the codes in use)" if usage < threshold else f"healthy ({usage:.1%} in use)"


def batch_code_stats(ids: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Perplexity and used share of one batch's ids (any shape) for logging."""
    counts = torch.bincount(ids.detach().reshape(-1), minlength=codebook_size).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum()
    return {"perplexity": entropy.exp(), "batch_usage": (counts > 0).float().mean()}
