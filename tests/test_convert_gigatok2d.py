"""GigaTok 2D: a synthetic checkpoint in the published VQVitModel2DPlus layout gives GigaTok's ids and pixels.

The CNNs, attention and Q-Former layer of the 1D test (tests/test_convert_gigatok.py) are reused; here
the 2D transformers are recomputed: ``TransformerLayer`` (positions added once, then pre-norm
self-attention and a GELU MLP) and ``TransformerDecoderLayer`` (the Q-Former layer with the grid as its
own memory, positions at every layer), the 1x1 quant convs over the grid and the raster-order
nearest-code search. Released-size check against GigaTok's own code: /work/ref/gigatok/RESULT.txt.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import vtok
from tests.taming_cnn import randconv, randlin
from tests.test_convert_gigatok import (
    DIM,
    GRID,
    PRESETS,
    SIZE,
    WIDTH,
    Z,
    _attention,
    _c,
    _layer,
    _ln,
    _pos,
    gigatok_state,
    ref_cnn_decoder,
    ref_cnn_encoder,
)
from vtok.cli import main
from vtok.convert import convert

K = 32


def _plain_layer(s, name, x):
    h = _ln(s, f"{name}.norm1", x)
    x = x + _attention(s, f"{name}.self_attn", h, h, h)
    return x + _l(s, f"{name}.linear2", F.gelu(_l(s, f"{name}.linear1", _ln(s, f"{name}.norm2", x))))


def _l(s, name, x):
    return x @ s[f"{name}.weight"].t() + s[f"{name}.bias"]


def gigatok2d_state(qformer: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    """VQVitModel2DPlus's key layout, tiny: the 1D file's CNNs and quant convs, 2D transformers in its Q-Formers'
    places (``TransformerDecoderLayer`` keeps every key of a Q-Former layer, ``TransformerLayer`` drops the
    cross-attention and ``norm3``)."""
    one_d = gigatok_state(seed)
    s = {k: v for k, v in one_d.items() if not k.startswith(("s2to1encoder.", "s1to2decoder."))}
    for src, dst, embed in (
        ("s2to1encoder", "s2dencoder", "encoder_embed"),
        ("s1to2decoder", "s2ddecoder", "decoder_embed"),
    ):
        for part in (f"{embed}.", "ln_pre.", "ln_post.", "positional_embedding", "transformer.0."):
            for key, value in one_d.items():
                if key.startswith(f"{src}.{part}") and (qformer or not (".multihead_attn." in key or ".norm3." in key)):
                    s[key.replace(src, dst, 1)] = value
    randconv(s, "s2dencoder.conv_out", WIDTH, Z, 1), randconv(s, "s2ddecoder.conv_out", WIDTH, Z, 3)
    randlin(s, "s2ddecoder.distill_mlp.0", WIDTH, 768)  # DINOv2 alignment head: dropped
    return s


def _transformer(s, part, x, qformer):
    pos = _pos(s, f"{part}.positional_embedding")
    if qformer:
        return _layer(s, f"{part}.transformer.0", x, x, pos, pos)
    return _plain_layer(s, f"{part}.transformer.0", x + pos)


def ref_latents(s, x, qformer):
    """images -> (B, g*g, DIM) l2-normalised latents, raster order."""
    h = rearrange(ref_cnn_encoder(s, x), "b c h w -> b (h w) c")
    t = _transformer(s, "s2dencoder", _l(s, "s2dencoder.encoder_embed", _ln(s, "s2dencoder.ln_pre", h)), qformer)
    t = rearrange(_ln(s, "s2dencoder.ln_post", t), "b (h w) d -> b d h w", h=GRID)
    z = _c(s, "quant_conv", _c(s, "s2dencoder.conv_out", t))  # (B, DIM, g, g)
    return F.normalize(rearrange(z, "b c h w -> b (h w) c"), dim=-1)


def ref_ids(s, x, qformer):
    z, codes = ref_latents(s, x, qformer), F.normalize(s["quantize.embedding.weight"], dim=-1)
    return ((z[:, :, None] - codes) ** 2).sum(-1).argmin(-1)  # (B, g*g)


def ref_decode(s, ids, qformer):
    q = F.normalize(s["quantize.embedding.weight"], dim=-1)[ids]  # (B, g*g, DIM)
    z = rearrange(_c(s, "post_quant_conv", rearrange(q, "b (h w) c -> b c h w", h=GRID)), "b c h w -> b (h w) c")
    t = _transformer(s, "s2ddecoder", _l(s, "s2ddecoder.decoder_embed", _ln(s, "s2ddecoder.ln_pre", z)), qformer)
    grid = rearrange(_ln(s, "s2ddecoder.ln_post", t), "b (h w) d -> b d h w", h=GRID)
    return ref_cnn_decoder(s, _c(s, "s2ddecoder.conv_out", grid, padding=1))


@pytest.mark.parametrize("qformer", [False, True], ids=["TransformerLayer", "TransformerDecoderLayer"])
def test_gigatok_2d_matches_the_published_forward(qformer, tmp_path):
    state = gigatok2d_state(qformer)
    z = ref_latents(state, torch.rand(4, 3, SIZE, SIZE) * 2 - 1, qformer).reshape(-1, DIM)
    state["quantize.embedding.weight"] = z[torch.randperm(z.shape[0])[:K]] + 0.05 * torch.randn(K, DIM)
    torch.save({"model": state, "steps": 5}, tmp_path / "VQ_2d.pt")
    model = convert("gigatok-2d", tmp_path / "VQ_2d.pt")
    assert model.encoder.cfg.qformer_layers == qformer
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x, qformer)
        assert tokens.grid == (GRID, GRID) and torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 5
        torch.testing.assert_close(model.decode(tokens), ref_decode(state, want, qformer), atol=1e-5, rtol=1e-5)


def test_1d_and_2d_files_are_told_apart(tmp_path, capsys):
    torch.save({"model": gigatok2d_state(False)}, tmp_path / "2d.pt")
    assert main(["convert", "--from", "gigatok", str(tmp_path / "2d.pt"), "--out", str(tmp_path / "a")]) == 2
    assert "look like gigatok-2d" in capsys.readouterr().err
    (tmp_path / "1d.yaml").write_text("model: {model_cls: VQVitModelPlus, init_args: {}}\n")
    args = ["convert", "--from", "gigatok-2d", str(tmp_path / "2d.pt"), "--config", str(tmp_path / "1d.yaml")]
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    assert "VQVitModelPlus is not a VQVitModel2DPlus checkpoint" in capsys.readouterr().err
    (tmp_path / "var.yaml").write_text(
        "model: {model_cls: VQVitModel2DPlus, init_args: {transformer_layer_type: QformerLayerVar}}\n"
    )
    args = ["convert", "--from", "gigatok-2d", str(tmp_path / "2d.pt"), "--config", str(tmp_path / "var.yaml")]
    assert main([*args, "--out", str(tmp_path / "c")]) == 2
    assert "QformerLayerVar" in capsys.readouterr().err


# GigaTok's reference code (VQVitModel2DPlus of the 2D configs): all parameters, and the DINOv2 alignment MLP's.
PUBLISHED_2D = {"ss": (135_548_427, 6_820_608), "sb": (197_132_555, 14_162_688), "bl": (491_410_187, 24_126_208)}


@pytest.mark.parametrize("variant", list(PUBLISHED_2D))
def test_2d_presets_have_the_reference_parameter_counts(variant):
    with torch.device("meta"):
        tok = vtok.build(PRESETS / f"vq_gigatok_{variant}_2d.yaml")
    total, alignment_head = PUBLISHED_2D[variant]
    assert sum(p.numel() for p in tok.parameters()) == total - alignment_head
    assert tok.codebook_sizes == (16384,) and tok.downsample_factor == 16
