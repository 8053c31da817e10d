"""Halting heads: how many tokens of a 1D tokenizer an image needs for a requested quality, in one pass.

KARL (Duggal et al., 2025, "Single-pass Adaptive Image Tokenization for Minimum Program Search"; its code is
the ``KARLTokenizer`` of the ``ShivamDuggal4/karl`` repository) gives every latent token a halting probability,
conditioned on the reconstruction error the caller asks for, and keeps the tokens that do not halt. It trains
the halting in the manner of upside-down reinforcement learning: encode with a sampled token count, measure the
reconstruction error actually reached, then teach the halting, conditioned on that reached error, to keep
exactly that many tokens. Asked at test time for an error, it answers with a length, with no search.

Here the head sits beside a trained ordered 1D tokenizer (nested dropout makes every prefix decodable) and reads
its encoder features and pre-quantisation latents, detached: training it never changes a token. Per step, for
every image of the batch:

1. ``lengths_per_image`` prefix lengths are drawn (1 and N always among them) and decoded in one batch;
2. the quality each reached is measured (PSNR for ``karl``; KARL's per-image L1 error for ``karl_l1``);
3. each reached quality becomes a condition, labelled with the shortest drawn prefix that reaches it (hindsight
   relabelling: a later prefix that reached no more does not teach a longer answer), plus one condition easier
   than any drawn prefix (label 1) and one harder than all N tokens reach (label N, as the search keeps N);
4. token i's halting logit is trained with binary cross-entropy towards "halt" exactly where i >= label.

The condition enters as an embedding added to every token, followed by ``depth`` transformer blocks over the
tokens (KARL conditions its whole encoder through a prepended loss token; a head on frozen features gets the
same reach through its own blocks) and KARL's per-token ``Linear -> Tanh -> Linear`` halting MLP. The kept
length is the number of tokens whose halting probability stays at or below ``threshold``, at least 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, SHARE, ranged
from vtok.errors import VtokError
from vtok.registry import register

PSNR_CAP_DB = 100.0  # as the eval package's PSNR: identical images score 100 dB, not infinity


def unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> [0, 1] on 8-bit levels (what a saved PNG holds, as every vtok score reads images)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round() / 255.0


def fourier(x: torch.Tensor, bands: int) -> torch.Tensor:
    """(...,) -> (..., 1 + 2 * bands): x, then sin and cos of x at octave-spaced frequencies."""
    freqs = math.pi * 2.0 ** torch.arange(bands, device=x.device, dtype=torch.float32)  # (F,)
    angles = x.float()[..., None] * freqs  # (..., F)
    return torch.cat([x.float()[..., None], angles.sin(), angles.cos()], dim=-1)


@register("halting", "karl")
class HaltingHead(nn.Module):
    """Per-token halting logits of a 1D tokenizer's tokens, conditioned on a requested PSNR (dB).

    ``forward(features (B, N, C), quality (B,)) -> (B, N)`` halting logits; :meth:`lengths` turns them into the
    kept length (B,); :meth:`loss` is one upside-down training step (module docstring).
    """

    metric = "psnr"  # the target name this head answers (``vtok encode --target psnr=30 --single-pass``)
    quality_unit = "dB"

    @dataclass
    class Config:
        # Channels of the features the head reads; the 1D tokenizer holding the head sets it (its encoder width
        # plus its code dim), so a preset leaves it out.
        in_channels: int | None = ranged(None, AT_LEAST_1)
        width: int = ranged(128, AT_LEAST_1)  # the head's own token width
        depth: int = ranged(1, NON_NEGATIVE)  # transformer blocks over the conditioned tokens (0: per-token MLP only)
        heads: int = ranged(4, AT_LEAST_1)  # attention heads of those blocks (width must be a multiple)
        # A token halts where its halting probability exceeds this: higher keeps more tokens (more images meet
        # the target, at more tokens); KARL's release masks at 0.75.
        threshold: float = ranged(0.5, SHARE)
        lengths_per_image: int = ranged(8, AT_LEAST_1)  # prefixes decoded per training image (1 and N among them)
        # How far (in dB) past the qualities reached by the drawn prefixes the off-curve conditions go: one
        # easier than every prefix (keep 1 token), one harder than all N tokens reach (keep all N).
        reach_db: float = ranged(6.0, POSITIVE)
        weight: float = ranged(1.0, NON_NEGATIVE)  # the halting loss's weight in the tokenizer's loss

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.in_channels is None:
            raise VtokError("a halting head needs in_channels (the 1D tokenizer holding it sets them)")
        if cfg.width % cfg.heads:
            raise VtokError(f"halting head: width {cfg.width} is not a multiple of heads {cfg.heads}")
        self.cfg = cfg
        self.bands = 6
        self.norm_in = nn.LayerNorm(cfg.in_channels)
        self.proj = nn.Linear(cfg.in_channels, cfg.width)
        self.position = nn.Linear(1 + 2 * self.bands, cfg.width)  # a token's place in the order, as a fraction
        self.condition = nn.Sequential(
            nn.Linear(1 + 2 * self.bands, cfg.width), nn.SiLU(), nn.Linear(cfg.width, cfg.width)
        )
        from timm.models.vision_transformer import Block  # timm loads only when a head is built

        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, 2.0, qkv_bias=True) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(cfg.width)
        self.halt = nn.Sequential(nn.Linear(cfg.width, cfg.width), nn.Tanh(), nn.Linear(cfg.width, 1))  # KARL's MLP

    # --- the quality this head is conditioned on ---------------------------------------------------------

    def quality(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """images, recon (B, 3, H, W) in [-1, 1] -> (B,) PSNR in dB on 8-bit [0, 1] values, capped at 100."""
        mse = (unit(images) - unit(recon)).pow(2).flatten(1).mean(1)
        return 10 * torch.log10(1.0 / mse.clamp(min=10 ** (-PSNR_CAP_DB / 10)))

    def quality_of_target(self, value: float) -> float:
        """A target in the metric's own unit (PSNR dB) -> the quality scale the head is conditioned on."""
        return float(value)

    def _scaled(self, quality: torch.Tensor) -> torch.Tensor:
        return (quality - 20.0) / 10.0  # demo tokenizers live at 10-35 dB: about [-1, 1.5]

    # --- inference ---------------------------------------------------------------------------------------

    def forward(self, features: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """features (B, N, C), quality (B,) on :meth:`quality`'s scale -> (B, N) halting logits."""
        n = features.shape[1]
        where = (torch.arange(n, device=features.device) + 0.5) / n  # (N,)
        x = self.proj(self.norm_in(features.float()))  # (B, N, W)
        x = x + self.position(fourier(where, self.bands))[None]  # (B, N, W)
        x = x + self.condition(fourier(self._scaled(quality), self.bands))[:, None]  # (B, N, W)
        for block in self.blocks:
            x = block(x)
        return self.halt(self.norm_out(x)).squeeze(-1)  # (B, N)

    def lengths(self, features: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """features (B, N, C), quality (B,) -> (B,) tokens to keep: those not halting, at least 1."""
        halted = torch.sigmoid(self(features, quality)) > self.cfg.threshold  # (B, N)
        n = features.shape[1]
        return (n - halted.sum(1)).clamp(1, n).long()

    # --- training ----------------------------------------------------------------------------------------

    def draw_lengths(self, batch: int, n: int, device: torch.device) -> torch.Tensor:
        """(B, K) prefix lengths per image: 1, N and K - 2 uniform in [1, N] (K = ``lengths_per_image``, >= 2)."""
        k = max(2, min(self.cfg.lengths_per_image, n))
        ends = torch.tensor([1, n], device=device).expand(batch, 2)
        middle = torch.randint(1, n + 1, (batch, k - 2), device=device)
        return torch.cat([ends, middle], dim=1)

    def loss(
        self, features: torch.Tensor, images: torch.Tensor, decode: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """One upside-down step (module docstring): the halting BCE against hindsight-relabelled lengths.

        Args:
            features: (B, N, C) the tokenizer's features of ``images``, detached.
            images: (B, 3, H, W) in [-1, 1].
            decode: (B, K) prefix lengths -> (B, K, 3, H, W) decodes of each image's first tokens, no gradient.
        """
        b, n = features.shape[:2]
        drawn = self.draw_lengths(b, n, features.device)  # (B, K)
        with torch.no_grad():
            recon = decode(drawn)  # (B, K, 3, H, W)
            k = drawn.shape[1]
            reached = self.quality(
                repeat(images, "b c h w -> (b k) c h w", k=k), rearrange(recon, "b k c h w -> (b k) c h w")
            ).view(b, k)  # (B, K)
            spread = torch.rand(b, 2, device=features.device) * self.cfg.reach_db
            easy = reached.min(1).values - spread[:, 0]  # below every drawn prefix: 1 token is enough
            hard = reached.max(1).values + 0.1 + spread[:, 1]  # above all N tokens: none is enough, keep N
            asked = torch.cat([reached, easy[:, None], hard[:, None]], dim=1)  # (B, K + 2)
            # The shortest drawn prefix reaching each asked quality; N where none does.
            reaches = reached[:, None, :] >= asked[:, :, None]  # (B, K + 2, K)
            label = torch.where(reaches, drawn[:, None, :], n).min(2).values  # (B, K + 2)
            halt = (torch.arange(n, device=features.device)[None, None] >= label[..., None]).float()  # (B, K+2, N)
        conditions = asked.shape[1]
        logits = self(repeat(features, "b n c -> (b k) n c", k=conditions), asked.flatten())  # (B * (K + 2), N)
        return self.cfg.weight * F.binary_cross_entropy_with_logits(logits, halt.flatten(0, 1))


@register("halting", "karl_l1")
class L1HaltingHead(HaltingHead):
    """KARL's own condition: the per-image mean absolute error (on 8-bit [0, 1] values) the caller accepts.

    Conditioned on -20 log10(L1), a dB-like scale on which higher is better, like PSNR's, so the training
    step and the off-curve conditions are the same; ``--target l1=0.05`` asks for an L1 error of at most 0.05.
    """

    metric = "l1"
    quality_unit = "dB of L1"

    @dataclass
    class Config(HaltingHead.Config):
        pass

    def quality(self, images: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        l1 = (unit(images) - unit(recon)).abs().flatten(1).mean(1)
        return -20 * torch.log10(l1.clamp(min=10 ** (-PSNR_CAP_DB / 20)))

    def quality_of_target(self, value: float) -> float:
        if value <= 0:
            raise VtokError(f"an l1 target must be above 0, got {value}")
        return -20 * math.log10(value)
