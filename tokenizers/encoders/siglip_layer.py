"""A SigLIP tower read at an inner layer, as TokenFlow's SigLIP tokenizer reads it.

TokenFlow's ``siglip_384`` tokenizer (ByteFlow-AI/TokenFlow, ``tokenflow_siglip_32k.pt``) trains a
SigLIP So400m/14-384 image tower with the rest and feeds its task layer transformers'
``hidden_states[-2]``: the tokens after 26 of the 27 blocks, before the final LayerNorm. The
last block, the final LayerNorm and the pooling head stay in the checkpoint (frozen, unused by
the token forward). Its images are scaled as TokenFlow's ``ScalingLayerForSigLip`` does: to the
8-bit range and clamped, to [0, 1], then normalised with mean = std = 0.5.

The tower is ``timm_siglip``'s (timm's ``vit_so400m_patch14_siglip_384``, random weights; the
converter maps transformers' names onto it); this part only changes where it is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.registry import register

from .timm_siglip import TimmSiglipEncoder


def siglip_scaling(images: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) in [-1, 1] -> SigLIP's input: via [0, 255] (clamped) and [0, 1], then (x - 0.5) / 0.5."""
    x = ((images + 1.0) * 127.5).clamp(0, 255.0) / 255.0
    return (x - 0.5) / 0.5


@register("encoder", "siglip_layer")
class SiglipLayerEncoder(TimmSiglipEncoder):
    """images (B, 3, S, S) in [-1, 1] -> (B, width, S // patch, S // patch): the tokens after ``layer`` blocks."""

    @dataclass
    class Config(TimmSiglipEncoder.Config):
        # Blocks run before the tokens are read, without the final LayerNorm: transformers' hidden_states[layer].
        # TokenFlow reads hidden_states[-2] of the 27-block tower, i.e. 26.
        layer: int = ranged(26, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        depth = len(self.net.blocks)
        if cfg.layer > depth:
            raise VtokError(f"siglip_layer encoder: layer {cfg.layer} is past the tower's {depth} blocks")
        self.layer = cfg.layer
        why = "TokenFlow reads the tokens before it (hidden_states[-2]); kept frozen in the checkpoint"
        unused = {
            f"net.blocks.{i}.{n}" for i in range(cfg.layer, depth) for n, _ in self.net.blocks[i].named_parameters()
        }
        unused |= {f"net.norm.{n}" for n, _ in self.net.norm.named_parameters()}
        self.no_grad_parameters = {**self.no_grad_parameters, **dict.fromkeys(sorted(unused), why)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, S, S) in [-1, 1] -> (B, width, h, w) tokens after ``layer`` blocks."""
        h = self.embed(siglip_scaling(images))  # (B, L, width)
        for block in self.blocks[: self.layer]:
            h = block(h)  # (B, L, width)
        return rearrange(h, "b (h w) c -> b c h w", h=self.grid[0])
