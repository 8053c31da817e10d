"""A SigLIP vision tower from timm, with its layers reachable one by one (DualToken taps several of them).

SigLIP's image tower (Zhai et al. 2023; SigLIP 2 keeps it for fixed-resolution models) is a
ViT without a class token: patch conv, a learned position table, pre-norm blocks with
tanh-GELU MLPs (LayerNorm eps 1e-6), a final LayerNorm (transformers' ``post_layernorm``)
and an attention-pooling head (one learned probe attends to all tokens, then LayerNorm + MLP
with a residual: transformers' ``head``, timm's ``attn_pool``). timm's
``vit_so400m_patch14_siglip_384`` is SigLIP(2) So400m/14 at 384 px; the tower is built with
random weights (converted checkpoints bring their own) and the tanh GELU of the released towers.
Images are fed as they are: SigLIP normalises with mean = std = 0.5, i.e. it reads [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.interfaces import Encoder
from vtok.registry import register


@register("encoder", "timm_siglip")
class TimmSiglipEncoder(Encoder):
    """images (B, 3, S, S) in [-1, 1] -> (B, width, S // patch, S // patch) tokens after the final LayerNorm."""

    @dataclass
    class Config:
        model: str = "vit_so400m_patch14_siglip_384"  # a timm SigLIP ViT name
        # Side of the square input images (the only size taken; the position table is built for it)
        image_size: int = ranged(384, AT_LEAST_1)
        # Optional changes to the named tower (random weights; tests' tiny towers).
        width: int | None = ranged(None, AT_LEAST_1)
        depth: int | None = ranged(None, AT_LEAST_1)  # transformer blocks of the tower (null: the named model's)
        heads: int | None = ranged(None, AT_LEAST_1)  # attention heads per block (null: the named model's)
        # Side of the tower's square patches (null: the named model's)
        patch_size: int | None = ranged(None, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        from vtok.compat import ensure_torchvision

        ensure_torchvision()  # timm imports torchvision
        import timm

        sizes = {"embed_dim": cfg.width, "depth": cfg.depth, "num_heads": cfg.heads, "patch_size": cfg.patch_size}
        try:
            self.net = timm.create_model(
                cfg.model,
                pretrained=False,
                img_size=cfg.image_size,
                num_classes=0,
                act_layer="gelu_tanh",  # the released SigLIP towers' GELU (timm's default here is the exact one)
                **{k: v for k, v in sizes.items() if v is not None},
            )
        except (RuntimeError, ValueError, TypeError) as err:  # unknown name, sizes that do not fit
            raise VtokError(f"timm_siglip encoder {cfg.model!r} could not be built ({err})") from None
        if getattr(self.net, "attn_pool", None) is None or self.net.num_prefix_tokens:
            raise VtokError(f"timm_siglip encoder: {cfg.model!r} is not a SigLIP tower (no class token, a MAP head)")
        self.image_size = cfg.image_size
        self.out_channels = self.net.embed_dim
        self.downsample_factor = self.net.patch_embed.patch_size[0]
        self.grid = tuple(self.net.patch_embed.grid_size)  # (h, w): 384 // 14 = 27, the remainder is not seen
        # SigLIP's attention-pooling head makes the image embedding (``pool``), which the token forward does not use.
        why = "SigLIP's pooling head: used by pool() (the image embedding), not by the token forward"
        self.no_grad_parameters = {f"net.attn_pool.{n}": why for n, _ in self.net.attn_pool.named_parameters()}

    @property
    def blocks(self) -> nn.ModuleList | nn.Sequential:
        """The transformer blocks, in order: (B, L, width) -> (B, L, width) each."""
        return self.net.blocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> (B, L, width) patch tokens plus positions, before the first block."""
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise VtokError(
                f"timm_siglip encoder takes {self.image_size}px images only (its position table; no other size or "
                f"multiple of the patch), got {tuple(images.shape[-2:])}"
            )
        return self.net.norm_pre(self.net._pos_embed(self.net.patch_embed(images)))  # (B, L, width)

    def final_norm(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, width) after the last block -> the tower's output tokens (its final LayerNorm)."""
        return self.net.norm(tokens)

    def pool(self, normed: torch.Tensor) -> torch.Tensor:
        """(B, L, width) output tokens -> (B, width): the attention-pooling head (SigLIP's image embedding)."""
        return self.net.attn_pool(normed)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> (B, width, h, w) output tokens."""
        h = self.embed(images)
        for block in self.blocks:
            h = block(h)  # (B, L, width)
        return rearrange(self.final_norm(h), "b (h w) c -> b c h w", h=self.grid[0])
