"""DualToken's tokenizer as published (Song et al. 2025, songweii/DualToken): one SigLIP tower, two codebooks.

Checked against DualToken's code by ``vtok convert --from dualtoken`` (vtok/convert/dualtoken.py). vtok's own
offline-trainable dual-codebook design, with a frozen teacher and conv adapters, is ``dual``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange

from vtok.config import AT_LEAST_1, NON_NEGATIVE, component, ranged
from vtok.errors import VtokError
from vtok.nets.dualtoken import AttnProjection, PostQuantBlock
from vtok.registry import register
from vtok.tokenizers.grid import GridTokenizer, check_images
from vtok.tokens import Tokens

RQ = {"name": "rq_shared", "dim": 32, "depth": 8, "codebook_size": 16384}
RQ_STEP = {**RQ, "name": "rq_shared_step"}  # DualToken's semantic codebook (rq_ema)


@register("model", "dualtoken")
class DualTokenTokenizer(GridTokenizer):
    """DualToken as published: pixel codes from a shallow SigLIP layer, semantic codes from a deep one.

    images -> SigLIP tower (``encoder``, trained with the rest). The output of block
    ``pixel_layer`` (1-based), plus ``shortcut_weight`` x a projection of block ``shortcut_layer``'s,
    is narrowed to the pixel code dim; block ``semantic_layer``'s output to the semantic code dim
    (``AttnProjection``). [semantic | pixel] -> ``quantizer`` (``dual_rvq`` of ``rq_shared_step``, the
    semantic codebook, and ``rq_shared``, the pixel one: ids (B, L, depth_sem + depth_pix), semantic first). Pixels: the pixel half is widened back
    (causal ``AttnProjection``), resized bilinearly to ``decoder_grid`` when set (DualToken's
    384 px model: 27x27 tokens -> 24x24), ``post_quant_conv`` (a residual block) -> CNN decoder.
    Semantics: the semantic half is widened back and replaces the tower's hidden state after
    ``semantic_layer``: the remaining blocks and the final LayerNorm give ``semantic_features``,
    the attention-pooling head ``pooled_features``.

    Training here: reconstruction and the codebooks' commitment terms. DualToken's semantic
    objective, SigLIP's image-text loss, needs the text tower, which vtok does not hold.
    """

    part_of = {
        "prequant_sem": "encoder",
        "prequant_pix": "encoder",
        "prequant_shortcut": "encoder",
        "postquant_sem": "encoder",
        "postquant_pix": "decoder",
        "post_quant_conv": "decoder",
    }

    @dataclass
    class Config(GridTokenizer.Config):
        encoder: dict = component("encoder", {"name": "timm_siglip"})
        quantizer: dict = component("quantizer", {"name": "dual_rvq", "semantic": RQ_STEP, "pixel": RQ})
        pixel_layer: int = ranged(6, AT_LEAST_1)  # 1-based block index (DualToken's layer_recon)
        semantic_layer: int = ranged(26, AT_LEAST_1)  # layer_sem
        shortcut_layer: int | None = ranged(4, AT_LEAST_1)  # layer_shortcut; None: no shortcut
        shortcut_weight: float = ranged(0.6, NON_NEGATIVE)
        decoder_grid: list[int] | None = ranged(None, AT_LEAST_1)  # [h, w] the decoder reads; None: the token grid

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        del self.quant_conv  # the projections below replace GridTokenizer's 1x1 convs
        width, depth = self.encoder.out_channels, len(self.encoder.blocks)
        if not hasattr(self.quantizer, "semantic_dim"):
            raise VtokError("model.quantizer must have a semantic and a pixel half (dual_rvq)")
        if not cfg.pixel_layer <= cfg.semantic_layer <= depth:
            raise VtokError(f"need pixel_layer <= semantic_layer <= the tower's {depth} blocks")
        if cfg.shortcut_layer is not None and cfg.shortcut_layer > cfg.semantic_layer:
            raise VtokError("model.shortcut_layer must not be after model.semantic_layer")
        if cfg.decoder_grid is not None and len(cfg.decoder_grid) != 2:
            raise VtokError("model.decoder_grid is [h, w]")
        sem, pix = self.quantizer.semantic_dim, self.quantizer.pixel_dim
        try:
            self.prequant_sem = AttnProjection(width, sem, causal=False)
            self.prequant_pix = AttnProjection(width, pix, causal=False)
            self.postquant_sem = AttnProjection(sem, width, causal=True)
            self.postquant_pix = AttnProjection(pix, width, causal=True)
            if cfg.shortcut_layer is not None:
                self.prequant_shortcut = AttnProjection(width, pix, causal=False)
        except ValueError as err:
            raise VtokError(f"model.encoder width {width} and code dims {sem}/{pix}: {err}") from None
        self.post_quant_conv = PostQuantBlock(width, self.decoder.in_channels)
        self.semantic_dim = sem
        self.cfg = cfg
        # The semantic read-out (the widening projection, the tower's blocks after semantic_layer, its final
        # norm and pooling head) learns from DualToken's text-contrastive objective, which vtok's loss does not
        # reproduce: a vtok training step gives it no gradient (declared for the registry-wide gradient tests).
        tail = [self.postquant_sem, *self.encoder.blocks[cfg.semantic_layer :], self.encoder.net.norm]
        tail += [self.encoder.net.attn_pool] if getattr(self.encoder.net, "attn_pool", None) is not None else []
        read_out = {id(p) for module in tail for p in module.parameters()}
        why = "semantic read-out: trained by DualToken's contrastive objective, not by vtok's loss"
        self.no_grad_parameters = {n: why for n, p in self.named_parameters() if id(p) in read_out}

    def _latents(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int], None]:
        """images (B, 3, S, S) -> [semantic | pixel] latents (B, L, D_sem + D_pix) and the token grid."""
        check_images(images, 1)
        cfg = self.cfg
        h = self.encoder.embed(images)  # (B, L, width)
        pix = short = None
        for i, block in enumerate(self.encoder.blocks[: cfg.semantic_layer], start=1):
            h = block(h)  # (B, L, width)
            if i == cfg.pixel_layer:
                pix = self.prequant_pix(h)  # (B, L, D_pix)
            if i == cfg.shortcut_layer:
                short = self.prequant_shortcut(h)
        if short is not None:
            pix = pix + cfg.shortcut_weight * short
        z = torch.cat([self.prequant_sem(h), pix], dim=-1)  # (B, L, D_sem + D_pix)
        return z, self.encoder.grid, None

    def _render(self, z_q: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, L, D_sem + D_pix) -> (B, 3, H, W) from the pixel half, unclamped."""
        x = self.postquant_pix(z_q[..., self.semantic_dim :])  # (B, L, width)
        x = rearrange(x, "b (h w) c -> b c h w", h=grid[0])
        if self.cfg.decoder_grid is not None and list(x.shape[-2:]) != list(self.cfg.decoder_grid):
            x = F.interpolate(x, size=tuple(self.cfg.decoder_grid), mode="bilinear", align_corners=False)
        return self.decoder(self.post_quant_conv(x))  # (B, 3, H, W)

    def _semantic_tokens(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, L, width): the widened semantic codes through the tower's remaining blocks and final norm."""
        self._check(tokens)
        h = self.postquant_sem(self.quantizer.lookup(tokens.ids)[..., : self.semantic_dim])  # (B, L, width)
        for block in self.encoder.blocks[self.cfg.semantic_layer :]:
            h = block(h)
        return self.encoder.final_norm(h)

    def semantic_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, h*w, width): the SigLIP tower's output tokens on the semantic codes (what an MLLM reads)."""
        return self._semantic_tokens(tokens)

    def pooled_features(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> (B, width): SigLIP's pooled image embedding on the semantic codes (its attention-pooling head)."""
        return self.encoder.pool(self._semantic_tokens(tokens))
