"""Ordering regularisers for 1D tokenizers: how many tokens a training sample keeps, and what fills the rest.

Trained with a random kept prefix, the first tokens must carry the coarse image
and later ones the detail, so any prefix decodes. Each rule is a registered part:

- ``none``: keep all N (TiTok).
- ``tail_drop``: one kept length per batch, uniform in [min_tokens, N] (One-D-Piece's tail token drop).
- ``nested_dropout``: a kept length per sample, uniform or a power of two (FlexTok).
- ``redundant_pad``: per-sample lengths like nested dropout, but dropped positions
  repeat the kept tokens cyclically instead of a mask token (ReTok's redundant
  token padding), at training and decoding alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vtok.config import AT_LEAST_1, UNIT, ranged
from vtok.registry import register


class Ordering(nn.Module):
    """``sample_lengths`` (training) and ``fill`` (training and decoding)."""

    def sample_lengths(self, batch: int, n: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch,), n, dtype=torch.long, device=device)

    def fill(self, z: torch.Tensor, lengths: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        """z: (B, N, D); positions >= lengths[b] become ``mask_token`` (D,)."""
        keep = torch.arange(z.shape[1], device=z.device)[None, :] < lengths[:, None]  # (B, N)
        return torch.where(keep[..., None], z, mask_token.to(z.dtype))


@register("ordering", "none")
class KeepAll(Ordering):
    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None):
        super().__init__()


@register("ordering", "tail_drop")
class TailDrop(Ordering):
    """One length for the whole batch, uniform in [min_tokens, N], applied with probability ``p``."""

    @dataclass
    class Config:
        p: float = ranged(1.0, UNIT)
        min_tokens: int = ranged(1, AT_LEAST_1)  # shortest length a batch keeps (capped at N)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def sample_lengths(self, batch: int, n: int, device: torch.device) -> torch.Tensor:
        k = n
        if float(torch.rand(())) < self.cfg.p:
            k = int(torch.randint(min(self.cfg.min_tokens, n), n + 1, ()))
        return torch.full((batch,), k, dtype=torch.long, device=device)


@register("ordering", "nested_dropout")
class NestedDropout(Ordering):
    """A length per sample: uniform in [min_tokens, N], or a power of two up to N."""

    @dataclass
    class Config:
        # Draw lengths among the powers of two in [min_tokens, N] (1, 2, 4, ...; FlexTok) instead of uniformly
        powers_of_two: bool = False
        min_tokens: int = ranged(1, AT_LEAST_1)  # shortest length a sample keeps (capped at N)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg

    def sample_lengths(self, batch: int, n: int, device: torch.device) -> torch.Tensor:
        if self.cfg.powers_of_two:
            choices = [k for k in (2**i for i in range(n.bit_length())) if self.cfg.min_tokens <= k <= n] or [n]
            pick = torch.randint(0, len(choices), (batch,))
            return torch.tensor(choices, dtype=torch.long)[pick].to(device)
        return torch.randint(min(self.cfg.min_tokens, n), n + 1, (batch,), device=device)


@register("ordering", "redundant_pad")
class RedundantPad(NestedDropout):
    """Nested-dropout lengths; positions past the length repeat the kept prefix cyclically."""

    def fill(self, z: torch.Tensor, lengths: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        n = z.shape[1]
        pos = torch.arange(n, device=z.device)[None, :]  # (1, N)
        source = torch.where(pos < lengths[:, None], pos, pos % lengths[:, None].clamp(min=1))  # (B, N)
        return torch.gather(z, 1, source[..., None].expand(-1, -1, z.shape[2]))
