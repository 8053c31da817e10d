"""UniTok's network blocks around the ViTamin tower, shared by the ``unitok`` encoder and decoder.

UniTok (FoundationVision/UniTok, ``models/vitamin.py``, ``models/vqvae.py``) builds its
encoder as timm's ViTamin hybrid (two MBConv stages, a strided convolution, then a ViT
whose MLP is a GeGLU) and its decoder as the same ViT followed by a convolutional
upsampler mirroring the MBConv stages. Between the towers and the codes sits an
"attention projection": a pre-norm block whose attention changes the width (the many
heads of a wide input averaged into one narrow output, or one narrow input fanned out
to many heads) beside a linear shortcut, then a GeGLU MLP.

Parameter names follow UniTok's, so a released state dict loads by name.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class GeGluMlp(nn.Module):
    """x (..., D) -> (..., D): LayerNorm, then w2(gelu_tanh(w0 x) * w1 x).

    UniTok's GeGLU always uses the tanh GELU and its own LayerNorm (eps 1e-6), whatever
    the ViT block passes; timm's ``vitamin.GeGluMlp`` takes the block's activation (erf
    GELU), so the published MLP is this one and the block's extra arguments are ignored.
    """

    def __init__(self, in_features: int, hidden_features: int, **_ignored: object):
        super().__init__()
        self.norm = nn.LayerNorm(in_features, eps=1e-6)
        self.act = nn.GELU(approximate="tanh")
        self.w0 = nn.Linear(in_features, hidden_features)
        self.w1 = nn.Linear(in_features, hidden_features)
        self.w2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        return self.w2(self.act(self.w0(x)) * self.w1(x))  # (..., D)


class WidthAttention(nn.Module):
    """Self-attention that changes the width: (B, N, in_dim) -> (B, N, out_dim).

    The heads have width max(in_dim, out_dim) / heads. Narrowing (in > out): the heads'
    outputs are averaged (then pooled to ``out_dim`` if a head is wider); widening: the
    heads are concatenated. q and v have biases, k none (UniTok's zero k bias).
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int):
        super().__init__()
        wide = max(in_dim, out_dim)
        self.in_dim, self.out_dim, self.num_heads = in_dim, out_dim, num_heads
        self.qkv = nn.Linear(in_dim, wide * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(wide))
        self.v_bias = nn.Parameter(torch.zeros(wide))
        self.proj = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias)  # (B, N, 3 * wide)
        q, k, v = rearrange(qkv, "b n (three h d) -> three b h n d", three=3, h=self.num_heads)
        x = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
        if self.in_dim > self.out_dim:
            x = x.mean(dim=1)  # (B, N, d)
            if x.shape[-1] != self.out_dim:
                x = F.adaptive_avg_pool1d(x, self.out_dim)
        else:
            x = rearrange(x, "b h n d -> b n (h d)")  # (B, N, out_dim)
        return self.proj(x)


class AttnProjection(nn.Module):
    """UniTok's width-changing block: (B, N, in_dim) -> (B, N, out_dim).

    x = proj(norm3(x)) + attn(norm1(x)); x = x + mlp(norm2(x)). Its LayerNorms are
    torch's defaults (eps 1e-5), the GeGLU's own norm eps 1e-6, as published.
    """

    def __init__(self, in_dim: int, out_dim: int, num_heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(in_dim)
        self.attn = WidthAttention(in_dim, out_dim, num_heads)
        self.proj = nn.Linear(in_dim, out_dim)
        self.norm3 = nn.LayerNorm(in_dim)
        self.norm2 = nn.LayerNorm(out_dim)
        self.mlp = GeGluMlp(out_dim, int(out_dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(self.norm3(x)) + self.attn(self.norm1(x))  # (B, N, out_dim)
        return x + self.mlp(self.norm2(x))


def layer_norm_2d(channels: int, act: bool = False) -> nn.Module:
    """timm's channel LayerNorm over (B, C, H, W) (eps 1e-6), followed by GELU when ``act``."""
    from timm.layers import get_norm_act_layer

    return get_norm_act_layer("layernorm2d", "gelu")(channels, eps=1e-6, apply_act=act)


class Upsample2d(nn.Module):
    """(B, C, H, W) -> (B, C_out, 2H, 2W): nearest 2x, then a 3x3 convolution."""

    def __init__(self, dim: int, dim_out: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class InvMbConvBlock(nn.Module):
    """An MBConv block run backwards: (B, C_in, H, W) -> (B, C_out, sH, sW), s = 2 if ``upsample``.

    Pre-norm, 1x1 expansion (x4, rounded to a multiple of 8) and GELU, a 2x upsampling
    (nearest + 3x3 conv) when ``upsample``, a depthwise 3x3 and GELU, a 1x1 projection;
    the shortcut upsamples the same way, or is a 1x1 convolution when only the width changes.
    """

    def __init__(self, in_chs: int, out_chs: int, upsample: bool):
        super().__init__()
        from timm.layers import make_divisible

        mid = make_divisible(out_chs * 4.0)
        if upsample:
            self.shortcut: nn.Module = Upsample2d(in_chs, out_chs)
        else:
            self.shortcut = nn.Conv2d(in_chs, out_chs, 1) if in_chs != out_chs else nn.Identity()
        self.pre_norm = layer_norm_2d(in_chs)
        self.conv1_1x1 = nn.Conv2d(in_chs, mid, 1)
        self.up = Upsample2d(mid, mid) if upsample else nn.Identity()
        self.conv2_kxk = nn.Conv2d(mid, mid, 3, padding=1, groups=mid)
        self.conv3_1x1 = nn.Conv2d(mid, out_chs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(F.gelu(self.conv1_1x1(self.pre_norm(x))))
        h = self.conv3_1x1(F.gelu(self.conv2_kxk(h)))
        return h + self.shortcut(x)  # (B, C_out, sH, sW)


class InvStem(nn.Module):
    """(B, C, H, W) -> (B, out, 2H, 2W): upsample (nearest + 3x3 conv), channel LayerNorm + GELU, 3x3 conv."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__()
        self.conv1 = Upsample2d(in_chs, in_chs)
        self.norm1 = layer_norm_2d(in_chs, act=True)
        self.conv2 = nn.Conv2d(in_chs, out_chs, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


def vitamin_blocks(embed_dim: int, depth: int, num_heads: int) -> nn.Sequential:
    """``depth`` timm ViT blocks as a ViTamin tower has them: qkv bias, LayerNorm eps 1e-6, GeGLU MLP x2."""
    from timm.models.vision_transformer import Block

    norm = partial(nn.LayerNorm, eps=1e-6)
    return nn.Sequential(
        *[
            Block(embed_dim, num_heads, mlp_ratio=2.0, qkv_bias=True, norm_layer=norm, mlp_layer=GeGluMlp)
            for _ in range(depth)
        ]
    )


def vitamin_tower(
    img_size: int, stem_width: int, stage_dims: list[int], stage_depths: list[int], depth: int, num_heads: int
) -> nn.Module:
    """timm's ViTamin hybrid with UniTok's settings and random weights: images -> (B, (H/16)(W/16), embed_dim).

    ``stage_dims`` are the two MBConv stages' widths and the ViT's (its ``embed_dim``).
    Patch size 1 on the stride-16 feature map, no position embedding, no class or
    register token, no pooling or head: the tokens after the final norm.
    """
    from timm.layers import HybridEmbed
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vitamin import MbConvStages, VitCfg

    embed_dim = stage_dims[-1]
    backbone = MbConvStages(VitCfg(embed_dim=tuple(stage_dims), depths=(*stage_depths, 1), stem_width=stem_width))
    embed = partial(HybridEmbed, backbone=backbone, proj=False)  # runs the stages once to size the grid
    return VisionTransformer(
        img_size=img_size, patch_size=1, embed_layer=embed, embed_dim=embed_dim, depth=depth, num_heads=num_heads,
        mlp_ratio=2.0, mlp_layer=GeGluMlp, class_token=False, global_pool="", pos_embed="none", fc_norm=False,
        num_classes=0, reg_tokens=0,
    )  # fmt: skip
