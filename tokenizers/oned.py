"""Variable-length 1D tokenizers (TiTok, One-D-Piece, FlexTok): an ordered sequence of up to N tokens.

ViT encoder with N latent tokens -> linear to the code dim -> quantizer (``vq`` with
l2-normalised codes, or ``fsq``) -> linear back -> positions past each sample's
length filled by the ordering part -> ViT decoder. Tokens are (B, N, 1) with
``lengths``: samples of one batch may keep different prefixes, and
``decode`` gives each the image of its own prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vtok.config import NON_NEGATIVE, build_component, component, ranged
from vtok.errors import VtokError
from vtok.interfaces import Tokenizer, TokenizerOutput
from vtok.registry import register
from vtok.tokenizers.bypass import BypassIn, BypassOut, fit_decoder_to_codes, init_principal_components
from vtok.tokenizers.grid import check_images
from vtok.tokens import Tokens


@register("model", "oned")
class OneDTokenizer(Tokenizer):
    """encoder (vit1d) -> quantizer -> ordering fill -> decoder (vit1d); optionally a halting head (KARL)."""

    part_of = {"to_code": "encoder", "from_code": "decoder", "bypass_in": "encoder", "bypass_out": "decoder"}

    @dataclass
    class Config:
        encoder: dict = component("encoder", {"name": "vit1d"})  # images -> N latent tokens (an encoder part)
        # The tokens' values -> ids (a quantizer part); its dim is the code width the linear maps meet
        quantizer: dict = component("quantizer", {"name": "vq", "dim": 12, "codebook_size": 4096})
        decoder: dict = component("decoder", {"name": "vit1d"})  # a (filled) token sequence -> images
        # What stands in for the tokens past each sample's length, in training and decoding (tail drop,
        # nested dropout, ...): the part that makes every prefix decodable
        ordering: dict = component("ordering", {"name": "none"})
        # A global linear path beside the transformers (tokenizers/bypass.py): fast convergence for small demos.
        linear_bypass: bool = False
        bypass_init_images: int = ranged(1024, NON_NEGATIVE)  # images for its principal components (0: random init)
        # Codes on fixed levels shared by every token (lfq, bsq, fsq): each component starts at variance 1 and the
        # linear decoder's scale is fitted to the codes (bypass.fit_decoder_to_codes), not assumed equal to them.
        bypass_scalar_codes: bool = False
        # A halting head (tokenizers/halting.py, KARL): predicts from the encoder's features how many tokens an
        # image needs for a requested quality, in one pass (``vtok encode --target psnr=30 --single-pass``).
        # Trained beside the tokenizer by the upside-down step in its loss; none: the search alone.
        halting: dict | None = component("halting", optional=True)

    def __init__(self, cfg: Config):
        super().__init__()
        self.encoder = build_component("encoder", cfg.encoder, "model.encoder")
        self.quantizer = build_component("quantizer", cfg.quantizer, "model.quantizer")
        self.decoder = build_component("decoder", cfg.decoder, "model.decoder")
        self.ordering = build_component("ordering", cfg.ordering, "model.ordering")
        self.num_tokens = self.encoder.num_latent_tokens
        if self.decoder.cfg.num_latent_tokens != self.num_tokens:
            raise VtokError("model: encoder and decoder must agree on num_latent_tokens")
        self.to_code = nn.Linear(self.encoder.out_channels, self.quantizer.dim)
        self.from_code = nn.Linear(self.quantizer.dim, self.decoder.in_channels)
        self.downsample_factor = self.encoder.downsample_factor
        self.bypass_in = self.bypass_out = None
        if cfg.linear_bypass:
            shape = (self.encoder.cfg.image_size, self.num_tokens, self.quantizer.dim)
            self.bypass_in, self.bypass_out = BypassIn(*shape), BypassOut(*shape)
            self.data_init_images = cfg.bypass_init_images
        if cfg.bypass_scalar_codes and not cfg.linear_bypass:
            raise VtokError("model.bypass_scalar_codes sets up the linear path: it needs model.linear_bypass: true")
        self.scalar_codes = cfg.bypass_scalar_codes
        self.halting = None
        if cfg.halting is not None:
            channels = self.encoder.out_channels + self.quantizer.dim  # it reads [encoder features | latents]
            if cfg.halting.get("in_channels") not in (None, channels):
                raise VtokError(f"model.halting.in_channels must be {channels} (encoder width + code dim), or left out")
            # Set on the config itself, so the spec this model records (config.json) rebuilds the same head.
            cfg.halting = {**cfg.halting, "in_channels": channels}
            self.halting = build_component("halting", cfg.halting, "model.halting")

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        return self.quantizer.codebook_sizes

    def _lengths(self, batch: int, num_tokens: int | torch.Tensor | None, device) -> torch.Tensor:
        n = self.num_tokens
        if num_tokens is None:
            return torch.full((batch,), n, dtype=torch.long, device=device)
        lengths = torch.as_tensor(num_tokens, dtype=torch.long, device=device).expand(batch).clone()
        if bool(((lengths < 1) | (lengths > n)).any()):
            raise VtokError(f"num_tokens must lie in [1, {n}]")
        return lengths

    def encode(self, images: torch.Tensor, num_tokens: int | torch.Tensor | None = None) -> Tokens:
        """images (B, 3, H, W) in [-1, 1] -> Tokens (B, N, 1) keeping the first ``num_tokens`` (int or (B,))."""
        check_images(images, self.downsample_factor)
        z = self._latents(images)  # (B, N, d)
        ids = self.quantizer.quantize_ids(z)  # (B, N, 1)
        lengths = self._lengths(images.shape[0], num_tokens, images.device)
        return Tokens(ids=ids, codebook_sizes=self.codebook_sizes, grid=None).prefix(lengths)

    def lookup(self, tokens: Tokens) -> torch.Tensor:
        """(B, N, d) quantized latents of ``tokens`` (padding positions included)."""
        if (
            tokens.codebook_sizes != self.codebook_sizes
            or tokens.grid is not None
            or tokens.num_positions != self.num_tokens
        ):
            raise VtokError(
                f"tokens (codebooks {tokens.codebook_sizes}, {tokens.num_positions} positions) do not fit this 1D "
                f"tokenizer (codebooks {self.codebook_sizes}, {self.num_tokens} positions)"
            )
        tokens.check_range()
        return self.quantizer.lookup(tokens.ids)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """With the linear bypass: it starts as the images' principal components, the transformers' outputs at
        zero and the codes at k-means centroids of the components, so the first step already codes images as
        well as a classic transform + VQ coder does."""
        if self.bypass_in is None or not self.data_init_images:
            return
        init_principal_components(self.bypass_in, self.bypass_out, images, unit_variance=self.scalar_codes)
        self.to_code.weight.zero_()
        self.to_code.bias.zero_()
        self.decoder.zero_output_()
        z = self._latents(images)  # (B, N, d)
        self.quantizer.init_codes(z)  # codes where the principal components put the images
        if self.scalar_codes:
            fit_decoder_to_codes(self.bypass_out, z, self.quantizer.lookup(self.quantizer.quantize_ids(z)))

    def quantizer_inputs(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> (B, N, d): what the quantizer sees (``train.reinit_unused_codes``)."""
        check_images(images, self.downsample_factor)
        return self._latents(images)

    def _latents(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) -> (B, N, d) values to quantize."""
        return self._features(images)[1]

    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W) -> encoder features (B, N, width) and the values to quantize (B, N, d)."""
        features = self.encoder(images)  # (B, N, width)
        z = self.to_code(features)  # (B, N, d)
        return features, z if self.bypass_in is None else z + self.bypass_in(images)

    def encode_to_quality(
        self, images: torch.Tensor, target: float, max_tokens: int | None = None, margin: float = 0.0
    ) -> Tokens:
        """images (B, 3, H, W) in [-1, 1] -> Tokens whose lengths the halting head chose for ``target``.

        One encoder pass and the head, no decode (KARL's single pass). ``target`` is in the head's metric
        (``self.halting.metric``: PSNR in dB, or KARL's L1 error); ``margin`` is added to it on the head's
        quality scale (dB) to ask for a little more than the target; ``max_tokens`` caps every length.
        """
        if self.halting is None:
            raise VtokError("this tokenizer has no halting head (model.halting): single-pass adaptive length needs one")
        check_images(images, self.downsample_factor)
        features, z = self._features(images)  # (B, N, width), (B, N, d)
        ids = self.quantizer.quantize_ids(z)  # (B, N, 1)
        asked = torch.full((images.shape[0],), self.halting.quality_of_target(target) + margin, device=images.device)
        lengths = self.halting.lengths(torch.cat([features, z], dim=-1), asked)  # (B,)
        if max_tokens is not None:
            lengths = lengths.clamp(max=max_tokens)
        return Tokens(ids=ids, codebook_sizes=self.codebook_sizes, grid=None).prefix(lengths)

    def _halting_loss(self, features: torch.Tensor, z_q: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The halting head's upside-down step on detached features: no gradient reaches the tokenizer."""

        def decode(lengths: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, K, 3, H, W)
            k = lengths.shape[1]
            z = z_q.detach().repeat_interleave(k, dim=0)  # (B * K, N, d), image-major like lengths.flatten()
            recon = self._decode_latents(z, lengths.flatten()).clamp(-1, 1)
            return recon.view(images.shape[0], k, *recon.shape[1:])

        return self.halting.loss(features.detach(), images, decode)

    def _decode_latents(
        self, z_q: torch.Tensor, lengths: torch.Tensor, images: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = self.from_code(z_q)  # (B, N, width)
        x = self.ordering.fill(x, lengths, self.decoder.mask_token)
        if images is not None:
            # A generative (flow) decoder trains on a one-step estimate of the image it is shown.
            recon = self.decoder.training_recon(x, lengths, images)
        else:
            recon = self.decoder(x, lengths)  # (B, 3, H, W)
        return recon if self.bypass_out is None else recon + self.bypass_out(z_q, lengths)

    def decode(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, 3, H, W) in [-1, 1]; each sample from its own prefix (``tokens.lengths``)."""
        lengths = tokens.lengths
        if lengths is None:
            lengths = torch.full((tokens.batch_size,), tokens.num_positions, dtype=torch.long)
        return self._decode_latents(self.lookup(tokens), lengths.to(tokens.ids.device)).clamp(-1, 1)

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Training pass: lengths from the ordering part (all N in eval), recon unclamped."""
        check_images(images, self.downsample_factor)
        features, z = self._features(images)  # (B, N, width), (B, N, d)
        q = self.quantizer(z)
        losses = q.losses
        if self.halting is not None and self.training:
            losses = {**losses, "halting": self._halting_loss(torch.cat([features, z], dim=-1), q.z_q, images)}
        if self.training:
            lengths = self.ordering.sample_lengths(images.shape[0], self.num_tokens, images.device)
        else:
            lengths = self._lengths(images.shape[0], None, images.device)
        recon = self._decode_latents(q.z_q, lengths, images if self.training else None)
        tokens = Tokens(ids=q.ids, codebook_sizes=self.codebook_sizes, grid=None).prefix(lengths)
        return TokenizerOutput(recon=recon, tokens=tokens, losses=losses, stats=q.stats)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer
