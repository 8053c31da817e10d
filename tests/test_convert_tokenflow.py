"""TokenFlow (clipb): a synthetic checkpoint in the published layout gives TokenFlow's ids, pixels and semantic features.

The reference recomputes TokenFlow's forward (ByteFlow-AI/TokenFlow, tokenizer/vq_model.py) with torch's
functional ops straight from the source state dict: OpenAI CLIP's vision tower (QuickGELU, patch tokens
after ln_post, the position table resized per call by DINO's bicubic recipe), the task layers, LlamaGen's
CNN, the shared-id multi-scale quantizer (area pooling of the un-normalised residual, per-scale
l2-normalised halves, summed squared distances to l2-normalised codes, straight-through codes
bicubic-upsampled and subtracted), BEiT-v2's ViT semantic decoder (q and v biases) and the pixel decoder
reading the pixel half only. vtok's converted model is checked against it, not against itself.
Released-size check against TokenFlow's own code (commit 9812da01, clipb_224 enhanced at 256 px, random
weights, 2 built-in crops): ids 1634/1634 equal, pixels within 3e-5, semantic features within 1.5e-6.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tests import tokenflow_towers_ref as towers
from tests.taming_cnn import attention, block, conv, gn, randattn, randconv, randlin, randnorm, randres
from vtok.cli import main
from vtok.convert import convert

CH, MULT, BLOCKS, Z = 32, [1, 1, 2], 1, 16  # LlamaGen CNN at f4
SEM, PIX, K = 8, 4, 32  # semantic / pixel code widths, shared codebook size
W, LAYERS, PATCH, STORED = 64, 1, 4, 3  # CLIP tower: width, depth, patch; position table for 3x3 patches
D, DEPTH, HEADS, OUT = 48, 1, 12, 16  # BEiT semantic decoder
SIZE, SCALES = 16, [1, 2, 3, 4]  # 16 px images: a 4x4 grid, so both position tables are resized (3 -> 4)


def _cnn_state(s, mult=MULT):
    """LlamaGen's Encoder / Decoder key layout (conv_blocks, mid.{0,1,2}), decoder block 0 the lowest level."""
    top, n = CH * mult[-1], len(mult)
    randconv(s, "encoder.conv_in", 3, CH, 3)
    cin = CH
    for i, m in enumerate(mult):
        for j in range(BLOCKS):
            randres(s, f"encoder.conv_blocks.{i}.res.{j}", cin, CH * m)
            cin = CH * m
            if i == n - 1:
                randattn(s, f"encoder.conv_blocks.{i}.attn.{j}", cin)
        if i != n - 1:
            randconv(s, f"encoder.conv_blocks.{i}.downsample.conv", cin, cin, 3)
    for side in ("encoder", "decoder"):
        randres(s, f"{side}.mid.0", top, top), randattn(s, f"{side}.mid.1", top), randres(s, f"{side}.mid.2", top, top)
    randnorm(s, "encoder.norm_out", top), randconv(s, "encoder.conv_out", top, Z, 3)
    randconv(s, "decoder.conv_in", Z, top, 3)
    cin = top
    for k, i in enumerate(reversed(range(n))):
        for j in range(BLOCKS + 1):
            randres(s, f"decoder.conv_blocks.{k}.res.{j}", cin, CH * mult[i])
            cin = CH * mult[i]
            if i == n - 1:
                randattn(s, f"decoder.conv_blocks.{k}.attn.{j}", cin)
        if i != 0:
            randconv(s, f"decoder.conv_blocks.{k}.upsample.conv", cin, cin, 3)
    randnorm(s, "decoder.norm_out", CH), randconv(s, "decoder.conv_out", CH, 3, 3)


def _common_state(s, mult, tower_width, stored):
    """The CNN, quantizer, task layers and BEiT semantic decoder (position table for ``stored`` x ``stored``)."""
    _cnn_state(s, mult)
    randconv(s, "quant_conv", Z, PIX, 1), randconv(s, "post_quant_conv", PIX, Z, 1)
    s["quantize.embedding_vqkd.weight"] = torch.randn(K, SEM)
    s["quantize.embedding_vqgan.weight"] = torch.randn(K, PIX)
    s["quantize.codebook_used"] = torch.zeros(131072)
    randlin(s, "encode_task_layer.0", tower_width, tower_width), randlin(s, "encode_task_layer.2", tower_width, SEM)
    d = "decoder_vqkd"
    s[f"{d}.cls_token"] = torch.randn(1, 1, D) * 0.1
    s[f"{d}.pos_embed"] = torch.randn(1, stored**2 + 1, D) * 0.1
    randconv(s, f"{d}.patch_embed.proj", SEM, D, 1)
    for i in range(DEPTH):
        b = f"{d}.blocks.{i}"
        randnorm(s, f"{b}.norm1", D), randnorm(s, f"{b}.norm2", D)
        s[f"{b}.attn.q_bias"], s[f"{b}.attn.v_bias"] = torch.randn(D) * 0.05, torch.randn(D) * 0.05
        randlin(s, f"{b}.attn.qkv", D, 3 * D, bias=False), randlin(s, f"{b}.attn.proj", D, D)
        randlin(s, f"{b}.mlp.fc1", D, 4 * D), randlin(s, f"{b}.mlp.fc2", 4 * D, D)
    randnorm(s, f"{d}.fc_norm", D)
    randlin(s, "decode_task_layer.0", D, D), randlin(s, "decode_task_layer.2", D, OUT)


def tokenflow_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """TokenFlow's state dict layout (teacher clipb_224) at a tiny size, random values."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    _common_state(s, MULT, W, STORED)
    e = "encoder_vqkd"
    s[f"{e}.conv1.weight"] = torch.randn(W, 3, PATCH, PATCH) / (3 * PATCH * PATCH) ** 0.5
    s[f"{e}.class_embedding"] = torch.randn(W) * 0.1
    s[f"{e}.positional_embedding"] = torch.randn(STORED**2 + 1, W) * 0.1
    randnorm(s, f"{e}.ln_pre", W), randnorm(s, f"{e}.ln_post", W)
    for i in range(LAYERS):
        b = f"{e}.transformer.resblocks.{i}"
        s[f"{b}.attn.in_proj_weight"] = torch.randn(3 * W, W) / W**0.5
        s[f"{b}.attn.in_proj_bias"] = torch.randn(3 * W) * 0.05
        randlin(s, f"{b}.attn.out_proj", W, W), randnorm(s, f"{b}.ln_1", W), randnorm(s, f"{b}.ln_2", W)
        randlin(s, f"{b}.mlp.c_fc", W, 4 * W), randlin(s, f"{b}.mlp.c_proj", 4 * W, W)
    return s


# --- TokenFlow's forward, recomputed ------------------------------------------------------


def _ln(x, s, name, eps=1e-5):
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"], eps=eps)


def _mlp2(x, s, name, act):
    return F.linear(
        act(F.linear(x, s[f"{name}.0.weight"], s[f"{name}.0.bias"])), s[f"{name}.2.weight"], s[f"{name}.2.bias"]
    )


def _mid(h, s, side):
    return block(attention(block(h, s, f"{side}.mid.0"), s, f"{side}.mid.1"), s, f"{side}.mid.2")


def ref_pixel_latents(s, x, mult=MULT):
    h, n = conv(x, s, "encoder.conv_in"), len(mult)
    for i in range(n):
        for j in range(BLOCKS):
            h = block(h, s, f"encoder.conv_blocks.{i}.res.{j}")
            if i == n - 1:
                h = attention(h, s, f"encoder.conv_blocks.{i}.attn.{j}")
        if i != n - 1:  # pad right and bottom by one, then a stride-2 3x3 conv without padding
            h = conv(F.pad(h, (0, 1, 0, 1)), s, f"encoder.conv_blocks.{i}.downsample.conv", stride=2, padding=0)
    h = conv(F.silu(gn(_mid(h, s, "encoder"), s, "encoder.norm_out")), s, "encoder.conv_out")
    return conv(h, s, "quant_conv")


def _resize_table(table, side):
    """DINO's recipe as TokenFlow runs it each forward: bicubic by scale factor (side + 0.1) / n."""
    n = int(math.sqrt(table.shape[0] - 1))
    if n == side:  # the table as stored
        return table
    grid = table[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, scale_factor=((side + 0.1) / n, (side + 0.1) / n), mode="bicubic")
    return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(side * side, -1)])


def _heads(t, n):
    return t.reshape(t.shape[0], t.shape[1], n, -1).transpose(1, 2)  # (B, heads, N, d)


def _mha(x, w, b, proj_w, proj_b, heads, scale_q=True):
    q, k, v = (_heads(t, heads) for t in F.linear(x, w, b).chunk(3, dim=-1))
    q = q * q.shape[-1] ** -0.5
    out = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v  # (B, heads, N, d)
    return F.linear(out.transpose(1, 2).reshape(x.shape), proj_w, proj_b)


def ref_semantic_latents(s, x):
    e, side = "encoder_vqkd", SIZE // PATCH
    t = F.conv2d(x, s[f"{e}.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)  # (B, N, W)
    t = torch.cat([s[f"{e}.class_embedding"].expand(x.shape[0], 1, W), t], 1) + _resize_table(
        s[f"{e}.positional_embedding"], side
    )
    t = _ln(t, s, f"{e}.ln_pre")
    for i in range(LAYERS):
        b = f"{e}.transformer.resblocks.{i}"
        t = t + _mha(_ln(t, s, f"{b}.ln_1"), s[f"{b}.attn.in_proj_weight"], s[f"{b}.attn.in_proj_bias"],
                     s[f"{b}.attn.out_proj.weight"], s[f"{b}.attn.out_proj.bias"], W // 64)  # fmt: skip
        h = F.linear(_ln(t, s, f"{b}.ln_2"), s[f"{b}.mlp.c_fc.weight"], s[f"{b}.mlp.c_fc.bias"])
        t = t + F.linear(h * torch.sigmoid(1.702 * h), s[f"{b}.mlp.c_proj.weight"], s[f"{b}.mlp.c_proj.bias"])
    t = _mlp2(_ln(t, s, f"{e}.ln_post")[:, 1:], s, "encode_task_layer", torch.tanh)  # (B, N, SEM)
    return t.transpose(1, 2).reshape(x.shape[0], SEM, side, side)


def _codes(s):
    return torch.cat([F.normalize(s["quantize.embedding_vqkd.weight"], dim=-1),
                      F.normalize(s["quantize.embedding_vqgan.weight"], dim=-1)], -1)  # fmt: skip


def ref_ids(s, x, rest=None, scales=SCALES):
    """Ids over ``scales`` of the latents ``rest`` (B, SEM + PIX, g, g); by default the clipb model's of ``x``."""
    if rest is None:
        rest = torch.cat([ref_semantic_latents(s, x), ref_pixel_latents(s, x)], 1)
    e, side, out = _codes(s), scales[-1], []
    for p in scales:
        z = F.interpolate(rest, size=(p, p), mode="area").permute(0, 2, 3, 1).reshape(-1, SEM + PIX)
        z = torch.cat([F.normalize(z[:, :SEM], dim=-1), F.normalize(z[:, SEM:], dim=-1)], -1)
        d = sum((z[:, h] ** 2).sum(1, keepdim=True) + (e[:, h] ** 2).sum(1) - 2 * z[:, h] @ e[:, h].T
                for h in (slice(0, SEM), slice(SEM, None)))  # fmt: skip
        idx = d.argmin(1)
        q = (z + (e[idx] - z)).reshape(x.shape[0], p, p, -1).permute(0, 3, 1, 2)
        rest = rest - F.interpolate(q, size=(side, side), mode="bicubic")
        out.append(idx.reshape(x.shape[0], p * p))
    return torch.cat(out, 1)


def ref_quant(s, ids, scales=SCALES):
    e, side, f, start = _codes(s), scales[-1], 0, 0
    for p in scales:
        q = e[ids[:, start : start + p * p]].reshape(ids.shape[0], p, p, -1).permute(0, 3, 1, 2)
        f, start = f + F.interpolate(q, size=(side, side), mode="bicubic"), start + p * p
    return f  # (B, SEM + PIX, g, g)


def ref_pixels(s, f, mult=MULT, size=None):
    """Decoded pixels, clamped; bicubic-resized to ``size`` first where given (TokenFlow's SigLIP model)."""
    h, n = _mid(conv(conv(f[:, SEM:], s, "post_quant_conv"), s, "decoder.conv_in"), s, "decoder"), len(mult)
    for k, i in enumerate(reversed(range(n))):
        for j in range(BLOCKS + 1):
            h = block(h, s, f"decoder.conv_blocks.{k}.res.{j}")
            if i == n - 1:
                h = attention(h, s, f"decoder.conv_blocks.{k}.attn.{j}")
        if i != 0:
            h = conv(F.interpolate(h, scale_factor=2, mode="nearest"), s, f"decoder.conv_blocks.{k}.upsample.conv")
    h = conv(F.silu(gn(h, s, "decoder.norm_out")), s, "decoder.conv_out")
    return (h if size is None else F.interpolate(h, size=(size, size), mode="bicubic")).clamp(-1, 1)


def ref_semantic(s, f):
    d, side = "decoder_vqkd", f.shape[-1]
    t = conv(f[:, :SEM], s, f"{d}.patch_embed.proj").flatten(2).transpose(1, 2)  # (B, g*g, D)
    t = torch.cat([s[f"{d}.cls_token"].expand(f.shape[0], 1, D), t], 1) + _resize_table(s[f"{d}.pos_embed"][0], side)
    for i in range(DEPTH):
        b = f"{d}.blocks.{i}"
        bias = torch.cat([s[f"{b}.attn.q_bias"], torch.zeros(D), s[f"{b}.attn.v_bias"]])
        t = t + _mha(_ln(t, s, f"{b}.norm1", 1e-6), s[f"{b}.attn.qkv.weight"], bias,
                     s[f"{b}.attn.proj.weight"], s[f"{b}.attn.proj.bias"], HEADS)  # fmt: skip
        h = F.gelu(F.linear(_ln(t, s, f"{b}.norm2", 1e-6), s[f"{b}.mlp.fc1.weight"], s[f"{b}.mlp.fc1.bias"]))
        t = t + F.linear(h, s[f"{b}.mlp.fc2.weight"], s[f"{b}.mlp.fc2.bias"])
    return _mlp2(_ln(t[:, 1:], s, f"{d}.fc_norm", 1e-6), s, "decode_task_layer", torch.tanh)  # (B, g*g, OUT)


@pytest.fixture
def tokenflow_file(tmp_path):
    state = tokenflow_state()
    torch.save({"model": state}, tmp_path / "tokenflow.pt")
    (tmp_path / "tf.yaml").write_text(f"image_size: {SIZE}\nscale_rq_layers: {SCALES}\n")
    return state, tmp_path / "tokenflow.pt"


def test_tokenflow_matches_the_published_forward(tokenflow_file, tmp_path):
    state, path = tokenflow_file
    model = convert("tokenflow", path, tmp_path / "out", config=tmp_path / "tf.yaml")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)
        assert tokens.ids.shape == (2, sum(p * p for p in SCALES), 1)
        assert torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 6  # the check is not passed by one code everywhere
        f = ref_quant(state, want)
        torch.testing.assert_close(model.decode(tokens), ref_pixels(state, f), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.semantic_features(tokens), ref_semantic(state, f), atol=1e-4, rtol=1e-4)


# --- the SigLIP and ViTamin teachers (tests/tokenflow_towers_ref.py) ---------------------------------


def _variant(kind, tmp_path):
    """A tiny TokenFlow checkpoint with the ``kind`` tower, its source config and its settings."""
    torch.manual_seed(0)
    s: dict[str, torch.Tensor] = {}
    if kind == "siglip":  # 14 px at patch 3: a 4x4 grid, 2 px unseen; the pixel branch at 4 x 4 = 16 px (f4)
        size, scales, mult, width = 14, [1, 2, 3, 4], MULT, towers.SW
        towers.siglip_state(s, 4)
    else:  # 64 px: a 4x4 grid at ViTamin's stride 16, the pixel CNN at f16
        size, scales, mult, width = 64, [1, 2, 4], [1, 1, 1, 1, 2], towers.VW
        towers.vitamin_state(s)
    _common_state(s, mult, width, 4)
    torch.save({"model": s}, tmp_path / f"{kind}.pt")
    (tmp_path / f"{kind}.yaml").write_text(f"image_size: {size}\nscale_rq_layers: {scales}\n")
    return s, size, scales, mult


@pytest.mark.parametrize("kind", ["siglip", "vitamin"])
def test_tokenflow_siglip_and_vitamin_match_the_published_forward(kind, tmp_path):
    state, size, scales, mult = _variant(kind, tmp_path)
    model = convert("tokenflow", tmp_path / f"{kind}.pt", tmp_path / "out", config=tmp_path / f"{kind}.yaml")
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    tokens_fn = towers.siglip_tokens if kind == "siglip" else towers.vitamin_tokens
    pixel_size = 16 if kind == "siglip" else None  # TokenFlow's SigLIP model: pixels at 16 x the grid, resized back
    with torch.no_grad():
        tokens = model.encode(x)
        sem = _mlp2(tokens_fn(state, x), state, "encode_task_layer", torch.tanh)  # (B, 16, SEM)
        sem = sem.transpose(1, 2).reshape(2, SEM, 4, 4)
        xp = x if pixel_size is None else F.interpolate(x, size=(pixel_size, pixel_size), mode="bicubic")
        want = ref_ids(state, x, torch.cat([sem, ref_pixel_latents(state, xp, mult)], 1), scales)
        assert torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 6  # the check is not passed by one code everywhere
        f = ref_quant(state, want, scales)
        pixels = ref_pixels(state, f, mult, size if pixel_size else None)
        torch.testing.assert_close(model.decode(tokens), pixels, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.semantic_features(tokens), ref_semantic(state, f), atol=1e-4, rtol=1e-4)


def test_tokenflow_siglip_and_vitamin_files_are_refused_in_one_line(tmp_path, capsys):
    state, *_ = _variant("siglip", tmp_path)
    cfg = ["--config", str(tmp_path / "siglip.yaml")]
    cut = {k: v for k, v in state.items() if "post_layernorm" not in k}
    torch.save({"model": cut}, tmp_path / "cut.pt")
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "a"), *cfg]) == 2
    assert "encoder_vqkd.vision_model.post_layernorm" in capsys.readouterr().err
    torch.save({"model": {**state, "scaling_layer.shift": torch.zeros(1, 3, 1, 1)}}, tmp_path / "shift.pt")
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "shift.pt"), "--out", str(tmp_path / "b"), *cfg]) == 2
    assert "scaling_layer.shift is not TokenFlow's" in capsys.readouterr().err
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "siglip.pt"), "--out", str(tmp_path / "c")]) == 2
    assert "siglip at 384 px has a 128x128 grid" in capsys.readouterr().err  # no --config: the released 384 px
    state, *_ = _variant("vitamin", tmp_path)
    tower = {k: v for k, v in state.items() if not k.startswith("encoder_vqkd.patch_embed")}
    torch.save({"model": tower}, tmp_path / "none.pt")
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "none.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "is not CLIP, SigLIP or ViTamin" in capsys.readouterr().err
    (tmp_path / "half.pt").write_bytes((tmp_path / "vitamin.pt").read_bytes()[:4000])
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "half.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_tokenflow_files_are_told_apart(tokenflow_file, tmp_path, capsys):
    state, path = tokenflow_file
    assert main(["convert", "--from", "llamagen-vq", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "look like tokenflow" in capsys.readouterr().err
    odd = {**state, "encoder_vqkd.vision_model.post_layernorm.weight": torch.ones(4)}
    torch.save({"model": odd}, tmp_path / "odd.pt")  # a CLIP tower with a stray tensor
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "odd.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "mixes clipb and siglip tensors" in capsys.readouterr().err
    torch.save({"model": {k: v for k, v in state.items() if "decode_task_layer.2" not in k}}, tmp_path / "cut.pt")
    cfg = ["--config", str(tmp_path / "tf.yaml")]
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "c"), *cfg]) == 2
    assert "decode_task_layer.2" in capsys.readouterr().err
    (tmp_path / "half.pt").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "half.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    (tmp_path / "empty.pt").write_bytes(b"")
    assert main(["convert", "--from", "tokenflow", str(tmp_path / "empty.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "is empty" in capsys.readouterr().err
