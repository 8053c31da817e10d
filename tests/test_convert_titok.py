"""TiTok / One-D-Piece conversion: synthetic checkpoints in the published layout give the original's outputs.

The reference below recomputes TiTok's published forward pass with torch's
functional ops straight from the source state dict ([0, 1] images, the latent
reshape, class/mask tokens plus positions, MaskGIT-VQGAN's decoder with its
output-side shortcut), so vtok's converted modules are checked against an
independent computation, not against themselves.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import vtok
from vtok.cli import main
from vtok.convert import convert

PATCH, IMAGE, N, T, K = 4, 16, 6, 12, 32  # 4x4 patches of 16px images, 6 tokens of dim 12, 32 codes
PIX_K, PIX_D, CHANNELS, BLOCKS = 64, 32, [32, 32, 64], 2  # MaskGIT head: x4 upsampling


def _lin(prefix: str, cin: int, cout: int, conv: bool = False) -> dict[str, torch.Tensor]:
    w = torch.randn(cout, cin) / cin**0.5
    return {f"{prefix}.weight": w[..., None, None] if conv else w, f"{prefix}.bias": torch.randn(cout) * 0.1}


def _ln(prefix: str, c: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1 + 0.1 * torch.randn(c), f"{prefix}.bias": 0.1 * torch.randn(c)}


def _vit_side(part: str, width: int, depth: int) -> dict[str, torch.Tensor]:
    s = {
        f"{part}.class_embedding": torch.randn(1, width) * width**-0.5,
        f"{part}.positional_embedding": torch.randn((IMAGE // PATCH) ** 2 + 1, width) * width**-0.5,
        f"{part}.latent_token_positional_embedding": torch.randn(N, width) * width**-0.5,
    }
    s |= _ln(f"{part}.ln_pre", width) | _ln(f"{part}.ln_post", width)
    for i in range(depth):
        b = f"{part}.transformer.{i}"
        s |= _ln(f"{b}.ln_1", width) | _ln(f"{b}.ln_2", width)
        s[f"{b}.attn.in_proj_weight"] = torch.randn(3 * width, width) / width**0.5
        s[f"{b}.attn.in_proj_bias"] = torch.randn(3 * width) * 0.1
        s |= _lin(f"{b}.attn.out_proj", width, width) | _lin(f"{b}.mlp.c_fc", width, 4 * width)
        s |= _lin(f"{b}.mlp.c_proj", 4 * width, width)
    return s


def _res(prefix: str, cin: int, cout: int) -> dict[str, torch.Tensor]:
    s = _ln(f"{prefix}.norm1", cin) | _ln(f"{prefix}.norm2", cout)
    s[f"{prefix}.conv1.weight"] = torch.randn(cout, cin, 3, 3) / (9 * cin) ** 0.5
    s[f"{prefix}.conv2.weight"] = torch.randn(cout, cout, 3, 3) / (9 * cout) ** 0.5
    if cin != cout:
        s[f"{prefix}.nin_shortcut.weight"] = torch.randn(cout, cout, 1, 1) / cout**0.5
    return s


def titok_state(width: int = 64, depth: int = 1, legacy: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """A TiTok state dict: published key names and layouts, small sizes, random values."""
    torch.manual_seed(seed)
    s = {"latent_tokens": torch.randn(N, width) * width**-0.5}
    s |= _lin("encoder.patch_embed", 3 * PATCH * PATCH, width)
    s["encoder.patch_embed.weight"] = s["encoder.patch_embed.weight"].reshape(width, 3, PATCH, PATCH)
    s |= _vit_side("encoder", width, depth) | _lin("encoder.conv_out", width, T, conv=True)
    s["quantize.embedding.weight"] = torch.randn(K, T)
    s |= _vit_side("decoder", width, depth) | _lin("decoder.decoder_embed", T, width)
    s["decoder.mask_token"] = torch.randn(1, 1, width) * width**-0.5
    if not legacy:
        return s | _lin("decoder.ffn.0", width, 3 * PATCH * PATCH, conv=True) | _conv("decoder.conv_out", 3, 3)
    s |= _lin("decoder.ffn.0", width, 2 * width, conv=True) | _lin("decoder.ffn.2", 2 * width, PIX_K, conv=True)
    s["pixel_quantize.embedding.weight"] = torch.randn(PIX_K, PIX_D)
    s |= _conv("pixel_decoder.conv_in", PIX_D, CHANNELS[-1])
    for j in range(BLOCKS):
        s |= _res(f"pixel_decoder.mid.{j}", CHANNELS[-1], CHANNELS[-1])
    for i, cout in enumerate(CHANNELS):
        cin = CHANNELS[min(i + 1, len(CHANNELS) - 1)]
        for j in range(BLOCKS):
            s |= _res(f"pixel_decoder.up.{i}.block.{j}", cin if j == 0 else cout, cout)
        if i > 0:
            s |= _conv(f"pixel_decoder.up.{i}.upsample_conv", cout, cout)
    return s | _ln("pixel_decoder.norm_out", CHANNELS[0]) | _conv("pixel_decoder.conv_out", CHANNELS[0], 3)


def _conv(prefix: str, cin: int, cout: int) -> dict[str, torch.Tensor]:
    w = torch.randn(cout, cin, 3, 3) / (9 * cin) ** 0.5
    return {f"{prefix}.weight": w, f"{prefix}.bias": torch.randn(cout) * 0.1}


# ---- the reference: TiTok's forward, functionally, on the source tensors -------------------------------------


def _ref_layer_norm(x, s, p):
    return F.layer_norm(x, x.shape[-1:], s[f"{p}.weight"], s[f"{p}.bias"])


def _ref_transformer(x, s, part, heads):
    depth = len({k.split(".")[2] for k in s if k.startswith(f"{part}.transformer.")})
    for i in range(depth):
        p = f"{part}.transformer.{i}"
        h = _ref_layer_norm(x, s, f"{p}.ln_1")
        q, k, v = (h @ s[f"{p}.attn.in_proj_weight"].T + s[f"{p}.attn.in_proj_bias"]).chunk(3, dim=-1)
        q, k, v = (rearrange(t, "b s (h d) -> b h s d", h=heads) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1) @ v
        x = x + F.linear(
            rearrange(att, "b h s d -> b s (h d)"), s[f"{p}.attn.out_proj.weight"], s[f"{p}.attn.out_proj.bias"]
        )
        h = _ref_layer_norm(x, s, f"{p}.ln_2")
        h = F.linear(F.gelu(F.linear(h, s[f"{p}.mlp.c_fc.weight"], s[f"{p}.mlp.c_fc.bias"])), s[f"{p}.mlp.c_proj.weight"], s[f"{p}.mlp.c_proj.bias"])  # fmt: skip
        x = x + h
    return x


def ref_encode(s, images01, heads, legacy=True):
    """images (B, 3, H, W) in [0, 1] -> ids (B, N)."""
    b = images01.shape[0]
    x = F.conv2d(images01, s["encoder.patch_embed.weight"], s["encoder.patch_embed.bias"], stride=PATCH)
    width = x.shape[1]
    x = x.reshape(b, width, -1).permute(0, 2, 1)
    x = torch.cat([s["encoder.class_embedding"].expand(b, 1, -1), x], 1) + s["encoder.positional_embedding"]
    lat = (s["latent_tokens"] + s["encoder.latent_token_positional_embedding"]).expand(b, -1, -1)
    x = _ref_layer_norm(torch.cat([x, lat], 1), s, "encoder.ln_pre")
    x = _ref_transformer(x, s, "encoder", heads)
    lat = _ref_layer_norm(x[:, -N:], s, "encoder.ln_post")
    lat = lat.reshape(b, width, N, 1) if legacy else lat.permute(0, 2, 1)[..., None]
    z = F.conv2d(lat, s["encoder.conv_out.weight"], s["encoder.conv_out.bias"]).reshape(b, T, N).permute(0, 2, 1)
    z, codes = F.normalize(z, dim=-1), F.normalize(s["quantize.embedding.weight"], dim=-1)
    return ((z[..., None, :] - codes) ** 2).sum(-1).argmin(-1)


def _ref_res(x, s, p):
    h = F.conv2d(F.silu(F.group_norm(x, 32, s[f"{p}.norm1.weight"], s[f"{p}.norm1.bias"], 1e-6)), s[f"{p}.conv1.weight"], padding=1)  # fmt: skip
    h = F.conv2d(F.silu(F.group_norm(h, 32, s[f"{p}.norm2.weight"], s[f"{p}.norm2.bias"], 1e-6)), s[f"{p}.conv2.weight"], padding=1)  # fmt: skip
    return h + (F.conv2d(h, s[f"{p}.nin_shortcut.weight"]) if f"{p}.nin_shortcut.weight" in s else x)


def ref_decode(s, ids, heads, legacy=True):
    """ids (B, k), any k <= N -> images (B, 3, H, W) in [0, 1]."""
    b, k = ids.shape
    z = F.normalize(s["quantize.embedding.weight"][ids], dim=-1)
    x = F.linear(z, s["decoder.decoder_embed.weight"], s["decoder.decoder_embed.bias"])
    width, grid = x.shape[-1], IMAGE // PATCH
    masks = torch.cat([s["decoder.class_embedding"].expand(b, 1, -1), s["decoder.mask_token"].expand(b, grid * grid, -1)], 1)  # fmt: skip
    x = torch.cat([masks + s["decoder.positional_embedding"], x + s["decoder.latent_token_positional_embedding"][:k]], 1)  # fmt: skip
    x = _ref_transformer(_ref_layer_norm(x, s, "decoder.ln_pre"), s, "decoder", heads)
    x = _ref_layer_norm(x[:, 1 : 1 + grid * grid], s, "decoder.ln_post")
    x = x.permute(0, 2, 1).reshape(b, width, grid, grid)
    if not legacy:
        x = F.conv2d(x, s["decoder.ffn.0.weight"], s["decoder.ffn.0.bias"])
        x = rearrange(x, "b (p q c) h w -> b c (h p) (w q)", p=PATCH, q=PATCH)
        return F.conv2d(x, s["decoder.conv_out.weight"], s["decoder.conv_out.bias"], padding=1).clamp(0, 1)
    x = torch.tanh(F.conv2d(x, s["decoder.ffn.0.weight"], s["decoder.ffn.0.bias"]))
    probs = F.conv2d(x, s["decoder.ffn.2.weight"], s["decoder.ffn.2.bias"]).softmax(1)
    x = torch.einsum("nchw,cd->ndhw", probs, s["pixel_quantize.embedding.weight"])
    x = F.conv2d(x, s["pixel_decoder.conv_in.weight"], s["pixel_decoder.conv_in.bias"], padding=1)
    for j in range(BLOCKS):
        x = _ref_res(x, s, f"pixel_decoder.mid.{j}")
    for i in reversed(range(len(CHANNELS))):
        for j in range(BLOCKS):
            x = _ref_res(x, s, f"pixel_decoder.up.{i}.block.{j}")
        if i > 0:
            p = f"pixel_decoder.up.{i}.upsample_conv"
            x = F.conv2d(
                F.interpolate(x, scale_factor=2.0, mode="nearest"), s[f"{p}.weight"], s[f"{p}.bias"], padding=1
            )
    x = F.silu(F.group_norm(x, 32, s["pixel_decoder.norm_out.weight"], s["pixel_decoder.norm_out.bias"], 1e-6))
    return F.conv2d(x, s["pixel_decoder.conv_out.weight"], s["pixel_decoder.conv_out.bias"], padding=1).clamp(0, 1)


# ---- tests ------------------------------------------------------------------------------------------------------

SMALL = {"model": {"vq_model": {"vit_enc_model_size": "small", "vit_dec_model_size": "small"}}}  # 8 heads


def _write(tmp_path, state, config=SMALL):
    src, cfg = tmp_path / "titok.bin", tmp_path / "config.json"  # the hub's config.json; a YAML file reads the same
    torch.save(state, src)
    cfg.write_text(json.dumps(config))
    return src, cfg


@pytest.mark.parametrize("legacy", [True, False], ids=["maskgit_head", "rgb_head"])
def test_titok_matches_the_published_forward(tmp_path, legacy):
    state = titok_state(legacy=legacy)
    src, cfg = _write(tmp_path, state)
    model = convert("titok", src, tmp_path / "out", config=cfg)
    images01 = torch.rand(3, 3, IMAGE, IMAGE)
    with torch.no_grad():
        ids = ref_encode(state, images01, heads=8, legacy=legacy)
        tokens = model.encode(images01 * 2 - 1)
        assert torch.equal(tokens.ids[..., 0], ids)
        expected = ref_decode(state, ids, heads=8, legacy=legacy) * 2 - 1
        assert expected.std() > 0.05  # a decode that carries signal, not a constant
        torch.testing.assert_close(model.decode(tokens), expected, atol=1e-4, rtol=1e-4)
        reloaded = vtok.load(tmp_path / "out")
        torch.testing.assert_close(reloaded.decode(tokens), expected, atol=1e-4, rtol=1e-4)


def test_one_d_piece_prefixes_decode_as_shorter_sequences(tmp_path):
    state = titok_state(seed=1)
    src, cfg = _write(tmp_path, state)
    model = convert("one-d-piece", src, config=cfg)
    assert model.spec["ordering"]["name"] == "tail_drop"
    images01 = torch.rand(3, 3, IMAGE, IMAGE)
    lengths = torch.tensor([1, N, 3])
    with torch.no_grad():
        ids = ref_encode(state, images01, heads=8)
        tokens = model.encode(images01 * 2 - 1, num_tokens=lengths)
        recon = model.decode(tokens)  # one batch, three prefix lengths
        for b, k in enumerate(lengths.tolist()):
            expected = ref_decode(state, ids[b : b + 1, :k], heads=8) * 2 - 1
            torch.testing.assert_close(recon[b : b + 1], expected, atol=1e-4, rtol=1e-4)


def test_heads_come_from_the_width_or_the_source_config(tmp_path, capsys):
    state = titok_state(width=512, seed=2)  # TiTok-S width: 8 heads without a config
    src, _ = _write(tmp_path, state)
    model = convert("titok", src)
    assert model.spec["encoder"]["heads"] == 8 and model.spec["decoder"]["heads"] == 8
    images01 = torch.rand(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        assert torch.equal(model.encode(images01 * 2 - 1).ids[..., 0], ref_encode(state, images01, heads=8))
    src, _ = _write(tmp_path, titok_state(width=64))
    assert main(["convert", "--from", "titok", str(src), "--out", str(tmp_path / "x")]) != 0
    assert "head count" in capsys.readouterr().err


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda s: s.pop("pixel_decoder.up.1.block.0.nin_shortcut.weight"), "nin_shortcut"),
        (lambda s: s.__setitem__("decoder.extra.weight", torch.zeros(1)), "decoder.extra.weight"),
        (lambda s: s.__setitem__("quantize.codebook.weight", s.pop("quantize.embedding.weight")), "quantize.embedding"),
    ],
    ids=["missing", "extra", "renamed"],
)
def test_bad_keys_are_named(tmp_path, capsys, edit, named):
    state = titok_state()
    edit(state)
    src, cfg = _write(tmp_path, state)
    assert main(["convert", "--from", "titok", str(src), "--config", str(cfg), "--out", str(tmp_path / "o")]) != 0
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_stage_one_checkpoint_is_refused_with_the_reason(tmp_path, capsys):
    state = {k: v for k, v in titok_state().items() if not k.startswith(("pixel_", "decoder.conv_out"))}
    src, cfg = _write(tmp_path, state)
    assert main(["convert", "--from", "titok", str(src), "--config", str(cfg), "--out", str(tmp_path / "o")]) != 0
    assert "stage-1" in capsys.readouterr().err
