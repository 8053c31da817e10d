"""The shared interface: encoder -> quantizer -> decoder, and what each returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vtok.errors import VtokError
from vtok.fast import full_precision
from vtok.pretrained import Pretrained, Saveable
from vtok.tokens import Tokens


@dataclass
class QuantizerOutput:
    """What a quantizer returns.

    Attributes:
        z_q: (B, L, D) quantized latents, straight-through in training.
        ids: (B, L, C) int64 code indices.
        losses: named scalar losses (already weighted), e.g. ``commit``.
        stats: named scalar statistics of this batch, e.g. ``perplexity``.
    """

    z_q: torch.Tensor
    ids: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class TokenizerOutput:
    """What ``Tokenizer.forward`` returns: recon (B, 3, H, W) in [-1, 1], tokens, losses, stats."""

    recon: torch.Tensor
    tokens: Tokens
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Encoder(Saveable, nn.Module):
    """images (B, 3, H, W) in [-1, 1] -> latents.

    A grid encoder returns (B, out_channels, H/f, W/f); a 1D encoder returns
    (B, num_latent_tokens, out_channels) and sets ``num_latent_tokens``.
    """

    out_channels: int
    downsample_factor: int
    num_latent_tokens: int | None = None


class Decoder(Saveable, nn.Module):
    """Quantized latents -> images (B, 3, H, W), unbounded (about [-1, 1]).

    A grid decoder reads (B, in_channels, h, w); a 1D decoder reads (B, N, in_channels)
    with positions past each sample's length already filled with ``mask_token``.
    """

    in_channels: int
    mask_token: nn.Parameter  # 1D decoders only
    # Why vtok cannot train this decoder (its weights come only from a converted checkpoint); None: it trains.
    inference_only: str | None = None

    @property
    def last_layer(self) -> torch.Tensor:
        """The output layer's weight, for the GAN loss's adaptive weight (a tokenizer's ``last_layer`` is this)."""
        raise NotImplementedError

    def zero_output_(self) -> None:
        """Set the layers that write pixels to zero (for models that start from another path's output)."""
        raise VtokError(f"the {type(self).__name__} decoder cannot start at zero output")

    def training_recon(self, latents: torch.Tensor, lengths: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction the loss sees in training; a generative decoder returns its estimate of ``images``."""
        return self(latents, lengths)


class Quantizer(nn.Module):
    """Maps (B, L, D) latents to codes; ``lookup`` is the exact inverse of the ids it returns.

    Subclasses set ``codebook_sizes`` (one entry per code of a position) and ``dim``, and
    implement the hooks ``_quantize`` and ``_lookup`` (and ``_quantize_ids`` where a lean
    inference search exists). The public entry points (``forward``, ``quantize_ids``,
    ``lookup``) are here: they turn autocast off for the tensors' device and hand the hooks
    float32 latents, so quantization runs in float32 also under mixed precision and no part
    repeats that guard.

    Optional abilities, declared here so no family probes for them: ``prefix_decodable``
    (``lookup`` takes the first d of C codes), ``token_scales`` (multi-scale layouts),
    ``code_vectors`` (one latent per token for the AR side), and ``semantic_dim`` /
    ``pixel_dim`` (a dual-codebook quantizer's latents are ``semantic_dim`` semantic channels
    followed by ``pixel_dim`` pixel channels; None where the latents are one kind).
    """

    codebook_sizes: tuple[int, ...]
    dim: int
    prefix_decodable: bool = False
    token_scales: tuple[tuple[int, int], ...] | None = None
    semantic_dim: int | None = None
    pixel_dim: int | None = None

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        """latents: (B, L, D) any float dtype -> QuantizerOutput with z_q (B, L, D) float32, ids (B, L', C)."""
        with full_precision(latents.device):
            return self._quantize(latents.float())

    @torch.no_grad()
    def quantize_ids(self, latents: torch.Tensor, **search: Any) -> torch.Tensor:
        """Inference path: (B, L, D) latents -> (B, L', C) ids, equal to ``forward(latents).ids``.

        ``search``: options of the part's own search, passed to ``_quantize_ids`` (e.g. vq's ``chunk``).
        """
        with full_precision(latents.device):
            return self._quantize_ids(latents.float(), **search)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L', C) int64 -> z_q: (B, L, D) float32."""
        with full_precision(ids.device):
            return self._lookup(ids).float()

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """The part's quantization. x: (B, L, D) float32, autocast off."""
        raise NotImplementedError(f"{type(self).__name__} implements no _quantize")

    def _quantize_ids(self, x: torch.Tensor) -> torch.Tensor:
        """The part's inference ids (no gradients): ``forward``'s unless the part has a leaner search.

        x: (B, L, D) float32, autocast off -> (B, L', C) int64.
        """
        return self.forward(x).ids

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """The part's inverse of its ids, autocast off. ids: (B, L', C) int64 -> (B, L, D)."""
        raise NotImplementedError(f"{type(self).__name__} implements no _lookup")

    def token_positions(self, length: int) -> int:
        """Token positions for ``length`` latent positions (more for multi-scale quantizers)."""
        return length

    def init_codes(self, latents: torch.Tensor) -> None:
        """Initialise every code from ``latents`` (B, L, D) (k-means where the part has codes to learn)."""

    def refresh_unused(self, latents: torch.Tensor) -> int:
        """Re-initialise the codes no latent of ``latents`` (B, L, D) picks from those latents; returns how many."""
        raise VtokError(f"the {type(self).__name__} quantizer cannot re-initialise unused codes")

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, L', C) -> (B, L', D): one latent per token position (``lookup`` unless positions are scales)."""
        return self.lookup(ids)


class Tokenizer(Pretrained, nn.Module):
    """Images <-> discrete tokens. Images are (B, 3, H, W) float in [-1, 1].

    ``num_tokens`` is the longest prefix of a variable-length 1D tokenizer (whose
    ``encode`` takes ``num_tokens``); None for layouts of a fixed size.
    """

    num_tokens: int | None = None
    trained_by: str = "tokenizer"  # the registered trainer that trains it (``vtok train``)
    # Images of the training stream a fresh run hands to ``init_from_data`` before its first step (0: none).
    data_init_images: int = 0

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialisation of a fresh run; images: (N, 3, H, W) in [-1, 1]."""

    def encode(self, images: torch.Tensor, num_tokens: int | None = None) -> Tokens:
        raise NotImplementedError

    def decode(self, tokens: Tokens) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        raise NotImplementedError

    def lookup(self, tokens: Tokens) -> torch.Tensor:
        """Quantized latents (B, L, D) of ``tokens``, e.g. to initialise an AR embedding."""
        raise NotImplementedError

    def quantizer_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """The (B, L, D) latents ``images`` hand to the quantizer (e.g. to re-fit unused codes on new data)."""
        raise VtokError(f"the {type(self).__name__} tokenizer does not expose its quantizer's inputs")

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output-layer weight, for the GAN loss's adaptive weight (``Decoder.last_layer``)."""
        raise NotImplementedError
