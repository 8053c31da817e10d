"""TokenFlow's SigLIP and ViTamin semantic towers at a tiny size: random states in the released key layout and their
forwards recomputed with torch's functional ops (tests/test_convert_tokenflow.py).

SigLIP (transformers' ``SiglipVisionModel`` under ``encoder_vqkd.vision_model``): patch conv plus a learned
position table, pre-norm layers with separate q / k / v projections and tanh-GELU MLPs (LayerNorm eps 1e-6);
TokenFlow reads ``hidden_states[-2]``, the tokens after all layers but the last, unnormalised; the last layer,
``post_layernorm`` and the pooling ``head`` are in the state, unused. ViTamin (timm's ``vitamin_*``, ``head`` and
``fc_norm`` deleted): a stem (3x3 stride-2 conv, channel LayerNorm + GELU, 3x3 conv), MBConv stages (channel
LayerNorm, 1x1 x4 expansion, GELU, depthwise 3x3 (stride 2 in a stage's first block), GELU, 1x1; the shortcut a
3x3 average pool without padded zeros then a 1x1 where the width changes), a strided 3x3 conv after a channel
LayerNorm, then ViT blocks with fused qkv and GeGLU MLPs (their own LayerNorm; exact GELU), no final norm.
Inputs are scaled as TokenFlow's ScalingLayerForSigLip / ScalingLayerForClip: via [0, 255] clamped, to [0, 1],
then (x - shift) / scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.siglip_layout import rand_siglip_vision
from tests.taming_cnn import randconv, randlin, randnorm

CLIP_SHIFT = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_SCALE = torch.tensor([0.26862954, 0.26130258, 0.27577711])
SW, SDEPTH, SPATCH, SMLP = 64, 2, 3, 239  # SigLIP: width, layers, patch; So400m's MLP ratio at width 64
VW, VDEPTH, VHEADS, STEM, STAGES, DEPTHS = 64, 1, 1, 16, [16, 32], [1, 2]  # ViTamin


def scaling(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    x = ((x + 1.0) * 127.5).clamp(0, 255.0) / 255.0
    return (x - shift[None, :, None, None]) / scale[None, :, None, None]


def _ln(x, s, name, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"], eps=eps)


def _ln2d(x, s, name):
    return _ln(x.permute(0, 2, 3, 1), s, name).permute(0, 3, 1, 2)


def _attend(q, k, v, heads):
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, N, d)
    out = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
    return out.transpose(1, 2).flatten(2)  # (B, N, C)


def _lin(x, s, name):
    return F.linear(x, s[f"{name}.weight"], s.get(f"{name}.bias"))


def siglip_state(s: dict[str, torch.Tensor], grid: int) -> None:
    """transformers' SiglipVisionModel keys under ``encoder_vqkd.vision_model`` (pooling head included)."""
    rand_siglip_vision(s, "encoder_vqkd.vision_model", SW, SDEPTH, SMLP, SPATCH, grid)
    s["scaling_layer.shift"], s["scaling_layer.scale"] = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.5)


def siglip_tokens(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """images (B, 3, S, S) in [-1, 1] -> (B, N, SW): hidden_states[-2]."""
    v, half = "encoder_vqkd.vision_model", torch.full((3,), 0.5)
    w = s[f"{v}.embeddings.patch_embedding.weight"]
    t = F.conv2d(scaling(x, half, half), w, s[f"{v}.embeddings.patch_embedding.bias"], stride=SPATCH)
    t = t.flatten(2).transpose(1, 2) + s[f"{v}.embeddings.position_embedding.weight"]  # (B, N, SW)
    for i in range(SDEPTH - 1):  # the last layer is not read
        b = f"{v}.encoder.layers.{i}"
        h = _ln(t, s, f"{b}.layer_norm1")
        qkv = [_lin(h, s, f"{b}.self_attn.{p}_proj") for p in "qkv"]
        t = t + _lin(_attend(*qkv, heads=1), s, f"{b}.self_attn.out_proj")
        h = F.gelu(_lin(_ln(t, s, f"{b}.layer_norm2"), s, f"{b}.mlp.fc1"), approximate="tanh")
        t = t + _lin(h, s, f"{b}.mlp.fc2")
    return t


def _mbconv(s, name, cin, cout, stride):
    mid = cout * 4  # x4, already a multiple of 8 here
    randnorm(s, f"{name}.pre_norm", cin)
    randconv(s, f"{name}.conv1_1x1", cin, mid, 1)
    s[f"{name}.conv2_kxk.weight"], s[f"{name}.conv2_kxk.bias"] = torch.randn(mid, 1, 3, 3) / 3, torch.randn(mid) * 0.05
    randconv(s, f"{name}.conv3_1x1", mid, cout, 1)
    if cin != cout:
        randconv(s, f"{name}.shortcut{'.expand' if stride == 2 else ''}", cin, cout, 1)


def vitamin_state(s: dict[str, torch.Tensor]) -> None:
    """timm's ViTamin keys under ``encoder_vqkd`` (head and fc_norm deleted)."""
    e = "encoder_vqkd.patch_embed.backbone"
    (
        randconv(s, f"{e}.stem.conv1", 3, STEM, 3),
        randnorm(s, f"{e}.stem.norm1", STEM),
        randconv(s, f"{e}.stem.conv2", STEM, STEM, 3),
    )
    cin = STEM
    for i, (dim, depth) in enumerate(zip(STAGES, DEPTHS)):
        for j in range(depth):
            _mbconv(s, f"{e}.stages.{i}.{j}", cin, dim, 2 if j == 0 else 1)
            cin = dim
    randnorm(s, f"{e}.pool.norm", cin), randconv(s, f"{e}.pool.proj", cin, VW, 3)
    for i in range(VDEPTH):
        b = f"encoder_vqkd.blocks.{i}"
        randnorm(s, f"{b}.norm1", VW), randnorm(s, f"{b}.norm2", VW), randnorm(s, f"{b}.mlp.norm", VW)
        randlin(s, f"{b}.attn.qkv", VW, 3 * VW), randlin(s, f"{b}.attn.proj", VW, VW)
        (
            randlin(s, f"{b}.mlp.w0", VW, 2 * VW),
            randlin(s, f"{b}.mlp.w1", VW, 2 * VW),
            randlin(s, f"{b}.mlp.w2", 2 * VW, VW),
        )
    s["scaling_layer.shift"], s["scaling_layer.scale"] = CLIP_SHIFT.view(1, 3, 1, 1), CLIP_SCALE.view(1, 3, 1, 1)


def _conv(x, s, name, stride=1, groups=1):
    w = s[f"{name}.weight"]
    return F.conv2d(x, w, s[f"{name}.bias"], stride=stride, padding=w.shape[-1] // 2, groups=groups)


def vitamin_tokens(s: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """images (B, 3, S, S) in [-1, 1] -> (B, (S/16)^2, VW): the last block's tokens."""
    e = "encoder_vqkd.patch_embed.backbone"
    h = _conv(scaling(x, CLIP_SHIFT, CLIP_SCALE), s, f"{e}.stem.conv1", stride=2)
    h = _conv(F.gelu(_ln2d(h, s, f"{e}.stem.norm1")), s, f"{e}.stem.conv2")
    for i, depth in enumerate(DEPTHS):
        for j in range(depth):
            b, stride = f"{e}.stages.{i}.{j}", 2 if j == 0 else 1
            short = F.avg_pool2d(h, 3, 2, 1, count_include_pad=False) if stride == 2 else h
            key = f"{b}.shortcut.expand" if stride == 2 else f"{b}.shortcut"
            short = _conv(short, s, key) if f"{key}.weight" in s else short
            y = F.gelu(_conv(_ln2d(h, s, f"{b}.pre_norm"), s, f"{b}.conv1_1x1"))
            y = F.gelu(_conv(y, s, f"{b}.conv2_kxk", stride=stride, groups=y.shape[1]))
            h = _conv(y, s, f"{b}.conv3_1x1") + short
    t = _conv(_ln2d(h, s, f"{e}.pool.norm"), s, f"{e}.pool.proj", stride=2).flatten(2).transpose(1, 2)  # (B, N, VW)
    for i in range(VDEPTH):
        b = f"encoder_vqkd.blocks.{i}"
        t = t + _lin(
            _attend(*_lin(_ln(t, s, f"{b}.norm1"), s, f"{b}.attn.qkv").chunk(3, -1), heads=VHEADS), s, f"{b}.attn.proj"
        )
        h = _ln(_ln(t, s, f"{b}.norm2"), s, f"{b}.mlp.norm")
        t = t + _lin(F.gelu(_lin(h, s, f"{b}.mlp.w0")) * _lin(h, s, f"{b}.mlp.w1"), s, f"{b}.mlp.w2")
    return t
