"""Functional re-computation of the published VQGAN CNN functions (taming-transformers), shared by the converter tests.

Written from the published definitions (taming/modules/diffusionmodules/model.py: ResnetBlock,
AttnBlock, the mid block), not copied. Two halves, both reading and writing taming's key layout
(``{name}.weight`` / ``{name}.bias``, ``norm1``/``conv1``/``norm2``/``conv2``/``nin_shortcut``,
``norm``/``q``/``k``/``v``/``proj_out``):

- ``rand*`` fill a state dict with random values for a synthetic checkpoint. The draw order is
  part of the contract: a test's state (and so its expected values) depends on it.
- ``conv``, ``gn``, ``block``, ``attention``, ``mid`` recompute the published forward straight
  from such a state dict with torch's functional ops, so vtok's converted model is checked
  against them, not against itself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# --- random states in taming's key layout -------------------------------------------------------


def randconv(s: dict[str, torch.Tensor], name: str, cin: int, cout: int, k: int) -> None:
    """A k x k conv (weight then bias drawn), scaled to keep activations near unit size."""
    s[f"{name}.weight"] = torch.randn(cout, cin, k, k) / (cin * k * k) ** 0.5
    s[f"{name}.bias"] = torch.randn(cout) * 0.05


def randnorm(s: dict[str, torch.Tensor], name: str, c: int) -> None:
    """A GroupNorm or LayerNorm affine near the identity."""
    s[f"{name}.weight"] = 1 + 0.1 * torch.randn(c)
    s[f"{name}.bias"] = 0.1 * torch.randn(c)


def randlin(s: dict[str, torch.Tensor], name: str, cin: int, cout: int, bias: bool = True) -> None:
    """A Linear layer, [cout, cin] weight, optional bias."""
    s[f"{name}.weight"] = torch.randn(cout, cin) / cin**0.5
    if bias:
        s[f"{name}.bias"] = torch.randn(cout) * 0.05


def randres(s: dict[str, torch.Tensor], name: str, cin: int, cout: int, k1: int = 3) -> None:
    """ResnetBlock without temb_proj; conv1 k1 x k1, a 1x1 nin_shortcut when the width changes."""
    randnorm(s, f"{name}.norm1", cin), randconv(s, f"{name}.conv1", cin, cout, k1)
    randnorm(s, f"{name}.norm2", cout), randconv(s, f"{name}.conv2", cout, cout, 3)
    if cin != cout:
        randconv(s, f"{name}.nin_shortcut", cin, cout, 1)


def randattn(s: dict[str, torch.Tensor], name: str, c: int) -> None:
    """AttnBlock: a norm and separate 1x1 q, k, v, proj_out convs."""
    randnorm(s, f"{name}.norm", c)
    for part in ("q", "k", "v", "proj_out"):
        randconv(s, f"{name}.{part}", c, c, 1)


def randcnn(s: dict[str, torch.Tensor], ch: int, mult: list[int], blocks: int, z: int, attn=randattn) -> None:
    """taming's Encoder (3 -> z channels) and Decoder (z -> 3), attention ``attn`` at the lowest resolution.

    Draw order: encoder down path, both mid blocks (encoder then decoder), encoder out, decoder in, up path, out.
    """
    top, last = ch * mult[-1], len(mult) - 1
    randconv(s, "encoder.conv_in", 3, ch, 3)
    cin = ch
    for i, m in enumerate(mult):
        for j in range(blocks):
            randres(s, f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
            if i == last:
                attn(s, f"encoder.down.{i}.attn.{j}", cin)
        if i != last:
            randconv(s, f"encoder.down.{i}.downsample.conv", cin, cin, 3)
    for side in ("encoder", "decoder"):
        randres(s, f"{side}.mid.block_1", top, top), attn(s, f"{side}.mid.attn_1", top)
        randres(s, f"{side}.mid.block_2", top, top)
    randnorm(s, "encoder.norm_out", top), randconv(s, "encoder.conv_out", top, z, 3)
    randconv(s, "decoder.conv_in", z, top, 3)
    cin = top
    for i in reversed(range(len(mult))):
        for j in range(blocks + 1):
            randres(s, f"decoder.up.{i}.block.{j}", cin, ch * mult[i])
            cin = ch * mult[i]
            if i == last:
                attn(s, f"decoder.up.{i}.attn.{j}", cin)
        if i != 0:
            randconv(s, f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    randnorm(s, "decoder.norm_out", ch), randconv(s, "decoder.conv_out", ch, 3, 3)


# --- the published forward, recomputed ----------------------------------------------------------


def conv(x: torch.Tensor, s: dict[str, torch.Tensor], name: str, **kw) -> torch.Tensor:
    """conv2d with ``name``'s weight and bias (none if absent); padding k // 2 unless given in ``kw``."""
    w = s[f"{name}.weight"]
    return F.conv2d(x, w, s.get(f"{name}.bias"), padding=kw.pop("padding", w.shape[-1] // 2), **kw)


def gn(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """taming's Normalize: GroupNorm(32 groups, eps 1e-6, affine)."""
    return F.group_norm(x, 32, s[f"{name}.weight"], s[f"{name}.bias"], eps=1e-6)


def block(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """ResnetBlock (no temb, no dropout): x or nin_shortcut(x), plus conv2(silu(gn(conv1(silu(gn(x))))))."""
    h = conv(F.silu(gn(x, s, f"{name}.norm1")), s, f"{name}.conv1")
    h = conv(F.silu(gn(h, s, f"{name}.norm2")), s, f"{name}.conv2")
    return (conv(x, s, f"{name}.nin_shortcut") if f"{name}.nin_shortcut.weight" in s else x) + h


def attention(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """AttnBlock: w = softmax(q^T k / sqrt(C)) over keys, out = v w^T, then proj_out and the residual."""
    b, c, height, width = x.shape
    h = gn(x, s, f"{name}.norm")
    q, k, v = (conv(h, s, f"{name}.{p}").flatten(2) for p in "qkv")  # (B, C, HW)
    w = torch.softmax(q.transpose(1, 2) @ k * c**-0.5, dim=2)  # (B, HW_q, HW_k)
    return x + conv((v @ w.transpose(1, 2)).reshape(b, c, height, width), s, f"{name}.proj_out")


def mid(h: torch.Tensor, s: dict[str, torch.Tensor], side: str, attn=attention) -> torch.Tensor:
    """The mid block of ``side`` (encoder / decoder): block_1, attn_1, block_2."""
    return block(attn(block(h, s, f"{side}.mid.block_1"), s, f"{side}.mid.attn_1"), s, f"{side}.mid.block_2")


def encoder(x: torch.Tensor, s: dict[str, torch.Tensor], mult: list[int], blocks: int, attn=attention) -> torch.Tensor:
    """Encoder: images [B, 3, H, W] -> [B, z, H / 2^(levels - 1), W / 2^(levels - 1)] (conv_out, before quant_conv).

    An attention block follows a resnet block where the state holds one; each downsample pads right and
    bottom by one, then a stride-2 3x3 conv without padding.
    """
    h = conv(x, s, "encoder.conv_in")
    for i in range(len(mult)):
        for j in range(blocks):
            h = block(h, s, f"encoder.down.{i}.block.{j}")
            if f"encoder.down.{i}.attn.{j}.norm.weight" in s:
                h = attn(h, s, f"encoder.down.{i}.attn.{j}")
        if i != len(mult) - 1:
            h = conv(F.pad(h, (0, 1, 0, 1)), s, f"encoder.down.{i}.downsample.conv", stride=2, padding=0)
    return conv(F.silu(gn(mid(h, s, "encoder", attn), s, "encoder.norm_out")), s, "encoder.conv_out")


def decoder(z: torch.Tensor, s: dict[str, torch.Tensor], mult: list[int], blocks: int, attn=attention) -> torch.Tensor:
    """Decoder: [B, z, h, w] (after post_quant_conv) -> images [B, 3, h 2^(levels - 1), w 2^(levels - 1)] in [-1, 1].

    blocks + 1 resnet blocks a level, attention after those the state has one for, nearest 2x upsampling then a conv.
    """
    h = mid(conv(z, s, "decoder.conv_in"), s, "decoder", attn)
    for i in reversed(range(len(mult))):
        for j in range(blocks + 1):
            h = block(h, s, f"decoder.up.{i}.block.{j}")
            if f"decoder.up.{i}.attn.{j}.norm.weight" in s:
                h = attn(h, s, f"decoder.up.{i}.attn.{j}")
        if i != 0:
            h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), s, f"decoder.up.{i}.upsample.conv")
    return conv(F.silu(gn(h, s, "decoder.norm_out")), s, "decoder.conv_out").clamp(-1, 1)
