"""The shared interface: encoder -> quantizer -> decoder, and what each returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from vtok.errors import VtokError
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

    Subclasses set ``codebook_sizes`` (one entry per code of a position) and ``dim``.
    Quantization always runs in float32, also under autocast.

    Optional abilities, declared here so no family probes for them: ``prefix_decodable``
    (``lookup`` takes the first d of C codes), ``token_scales`` (multi-scale layouts)
    and ``code_vectors`` (one latent per token for the AR side).
    """

    codebook_sizes: tuple[int, ...]
    dim: int
    prefix_decodable: bool = False
    token_scales: tuple[tuple[int, int], ...] | None = None

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        raise NotImplementedError

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, C) int64 -> z_q: (B, L, D) float32."""
        raise NotImplementedError

    def token_positions(self, length: int) -> int:
        """Token positions for ``length`` latent positions (more for multi-scale quantizers)."""
        return length

    def quantize_ids(self, latents: torch.Tensor) -> torch.Tensor:
        """Inference path: (B, L, D) latents -> (B, L', C) ids, equal to ``forward(latents).ids``."""
        return self.forward(latents).ids

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
