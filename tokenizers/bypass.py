"""A global linear path beside a 1D tokenizer's transformers: the code starts as a linear transform code.

``encode`` adds ``A x`` (the flattened image mapped to every token's code values) to
the transformer's latents, and ``decode`` adds ``B z`` (the kept tokens' quantized
values mapped back to pixels) to the transformer's image. A linear autoencoder
learns in a few hundred steps what a ViT needs tens of thousands for (the
principal components of the images), and under nested dropout its tokens take the
components in order of variance, the coarse-to-fine order a 1D tokenizer wants; the
transformers learn what is not linear on top. Positions past a sample's length
contribute nothing to ``B z``, so a prefix decodes the image of that prefix.

Only for small fixed image sizes: A and B hold 3 H W x N d weights each (3.1M at
64 px with 32 tokens of dim 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class _Scaled(nn.Module):
    """A linear map whose weights are stored in units of 1 / sqrt(fan_in): Adam moves every weight by about
    the learning rate a step, which would wipe out a 12288-input map's principal components (entries near
    0.01) in a few steps at the transformers' learning rate; in these units the same steps are small."""

    def __init__(self, fan_in: int, fan_out: int):
        super().__init__()
        self.gain = fan_in**-0.5
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / 3**0.5)  # std 1 / sqrt(3 fan_in) in effect
        self.bias = nn.Parameter(torch.zeros(fan_out))

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.gain, self.bias)


class BypassIn(_Scaled):
    """images (B, 3, S, S) -> (B, N, d) code values (the encoder's side)."""

    def __init__(self, image_size: int, num_tokens: int, dim: int):
        super().__init__(3 * image_size * image_size, num_tokens * dim)
        self.num_tokens = num_tokens

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return rearrange(self.linear(images.flatten(1)), "b (n d) -> b n d", n=self.num_tokens)


class BypassOut(_Scaled):
    """(B, N, d) quantized values and (B,) kept lengths -> (B, 3, S, S) from the kept tokens (the decoder's side)."""

    def __init__(self, image_size: int, num_tokens: int, dim: int):
        super().__init__(num_tokens * dim, 3 * image_size * image_size)
        nn.init.zeros_(self.weight)  # starts as the transformer decoder alone
        self.image_size, self.num_tokens = image_size, num_tokens

    def forward(self, z_q: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        keep = torch.arange(self.num_tokens, device=z_q.device)[None, :] < lengths[:, None]  # (B, N)
        flat = (z_q * keep[..., None].to(z_q.dtype)).flatten(1)  # (B, N d)
        return rearrange(self.linear(flat), "b (c h w) -> b c h w", c=3, h=self.image_size)


@torch.no_grad()
def init_principal_components(
    encode: BypassIn, decode: BypassOut, images: torch.Tensor, unit_variance: bool = False
) -> None:
    """Both maps as the principal components of ``images`` (N, 3, S, S): token t holds components t d to
    (t + 1) d - 1, so a prefix of k tokens is the best linear code of k d values, the classic transform coder.

    The components are scaled so that a mean squared error of the code values equals the same mean squared
    error of the pixels: the commitment term and the reconstruction loss speak in one unit. With
    ``unit_variance`` every component is scaled to variance 1 instead, for codes whose levels are fixed and
    shared by every token (sign bits, FSQ grids): the first token's values would otherwise span hundreds of
    the last one's.
    """
    x = images.flatten(1).float()  # (N, P)
    mean = x.mean(0)
    _, s, v = torch.linalg.svd(x - mean, full_matrices=False)  # rows: components, by variance
    codes = encode.weight.shape[0]
    k = min(codes, v.shape[0])
    scale = torch.full((k,), (codes / x.shape[1]) ** 0.5, device=x.device)  # one scale a component
    if unit_variance:  # components with next to no variance (past the images' rank) are not blown up
        scale = (len(x) - 1) ** 0.5 / s[:k].clamp_min(1e-3 * s[0])
    encode.weight.zero_()
    encode.weight[:k] = v[:k] * scale[:, None] / encode.gain
    encode.bias.copy_(-(encode.weight * encode.gain) @ mean)
    decode.weight.zero_()
    decode.weight[:, :k] = v[:k].t() / scale[None, :] / decode.gain
    decode.bias.copy_(mean)


@torch.no_grad()
def fit_decoder_to_codes(decode: BypassOut, z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Rescale each code value's decoder column by the least-squares gain from its quantized value back to the
    value: E[z z_q] / E[z_q^2], over ``z``, ``z_q`` (B, N, d). Returns the (N d,) gains.

    After ``init_principal_components`` the decoder assumes z_q is about z, true for k-means codes (gains near
    1) but not for sign bits, where every component, large or small, is coded as +-1: without the gain a
    low-variance component's sign bit would be written back at the size of the first component's. With it the
    start is the classic transform coder with a one-bit scalar quantizer per component (gain sigma sqrt(2/pi)).
    """
    z, z_q = z.flatten(1).float(), z_q.flatten(1).float()  # (B, N d)
    gains = (z * z_q).sum(0) / (z_q * z_q).sum(0).clamp_min(1e-12)
    decode.weight.mul_(gains[None, :])
    return gains
