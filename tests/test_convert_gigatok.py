"""GigaTok: a synthetic checkpoint in the published 1D layout gives GigaTok's ids and pixels.

The reference recomputes GigaTok's published forward with torch's functional ops straight
from the source state dict: the CNN encoder (no attention), the encoder Q-Former (queries:
block means of the embedded grid, coarse to fine; pre-norm self-attention, cross-attention
with positions on queries and keys, GELU MLP; attention written out as softmax(q k^T / sqrt(d)) v),
1x1 quant convs, the l2-normalised nearest-code search, the decoder Q-Former (every grid query
starts as the first token) and the CNN decoder (adaptive group norm from the grid's unbiased
spread and mean, conv + depth-to-space in DCR order). vtok's converted model is checked
against these, not against itself. Released-size check against GigaTok's own code:
/work/ref/gigatok/RESULT.txt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange

import vtok
from tests.taming_cnn import block, gn, randconv, randlin, randnorm, randres
from vtok.cli import main
from vtok.convert import convert

PRESETS = Path(__file__).resolve().parent.parent / "configs" / "tokenizer"
# GigaTok's reference code (VQVitModelPlus of the released configs): all parameters, and those of the decoder's
# DINOv2 alignment MLP (training only, not converted). /work/ref/gigatok/count_params.py.
PUBLISHED = {"ss": (136_073_227, 6_820_608), "sb": (232_399_627, 14_162_688), "bl": (621_637_131, 24_126_208),
             "xlxxl": (2_893_970_443, 51_917_568)}  # fmt: skip

SIZE, CH, MULT, BLOCKS, Z, WIDTH, HEADS, N, DIM, K = 16, 32, [1, 2], 1, 16, 256, 4, 16, 4, 32
GRID = SIZE // 2 ** (len(MULT) - 1)  # 8x8 CNN grid; WIDTH 256 is GigaTok's "tiny" size (4 heads)


def _qformer(s, part, embed):
    s[f"{part}.positional_embedding"] = torch.randn(GRID * GRID, 1, WIDTH) * WIDTH**-0.5
    s[f"{part}.latent_token_positional_embedding"] = torch.randn(N, 1, WIDTH) * WIDTH**-0.5
    randnorm(s, f"{part}.ln_pre", Z), randlin(s, f"{part}.{embed}", Z, WIDTH), randnorm(s, f"{part}.ln_post", WIDTH)
    layer = f"{part}.transformer.0"
    for attn in ("self_attn", "multihead_attn"):
        s[f"{layer}.{attn}.in_proj_weight"] = torch.randn(3 * WIDTH, WIDTH) / WIDTH**0.5
        s[f"{layer}.{attn}.in_proj_bias"] = torch.randn(3 * WIDTH) * 0.05
        randlin(s, f"{layer}.{attn}.out_proj", WIDTH, WIDTH)
    randlin(s, f"{layer}.linear1", WIDTH, 4 * WIDTH), randlin(s, f"{layer}.linear2", 4 * WIDTH, WIDTH)
    for i in (1, 2, 3):
        randnorm(s, f"{layer}.norm{i}", WIDTH)


def gigatok_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """VQVitModelPlus's key layout (tokenizer/tokenizer_image/vq/{vq_vit_model,blocks}.py), tiny, random values."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    randconv(s, "encoder.conv_in", 3, CH, 3)
    cin = CH
    for i, m in enumerate(MULT):
        for j in range(BLOCKS):
            randres(s, f"encoder.conv_blocks.{i}.res.{j}", cin, CH * m)
            cin = CH * m
        if i != len(MULT) - 1:
            randconv(s, f"encoder.conv_blocks.{i}.downsample.conv", cin, cin, 3)
    randres(s, "encoder.mid.0", cin, cin), randres(s, "encoder.mid.1", cin, cin)
    randnorm(s, "encoder.norm_out", cin), randconv(s, "encoder.conv_out", cin, Z, 3)
    _qformer(s, "s2to1encoder", "encoder_embed")
    randlin(s, "s2to1encoder.global_proj", WIDTH, WIDTH), randconv(s, "s2to1encoder.conv_out", WIDTH, Z, 1)
    randconv(s, "quant_conv", Z, DIM, 1), randconv(s, "post_quant_conv", DIM, Z, 1)
    s["quantize.embedding.weight"] = torch.randn(K, DIM)
    s["quantize.codebook_used"] = torch.zeros(65536)
    _qformer(s, "s1to2decoder", "decoder_embed")
    randconv(s, "s1to2decoder.conv_out", WIDTH, Z, 3)
    for i, (cin, cout) in enumerate([(WIDTH, WIDTH * 4), (WIDTH * 4, WIDTH * 4), (WIDTH * 4, 768)]):
        randlin(s, f"s1to2decoder.distill_mlp.{2 * i}", cin, cout)  # DINOv2 alignment head: dropped
    cin = CH * MULT[-1]
    (
        randconv(s, "decoder.conv_in", Z, cin, 3),
        randres(s, "decoder.mid.0", cin, cin),
        randres(s, "decoder.mid.1", cin, cin),
    )
    for i, level in enumerate(reversed(range(len(MULT)))):
        randlin(s, f"decoder.adaptive.{i}.gamma", Z, cin), randlin(s, f"decoder.adaptive.{i}.beta", Z, cin)
        for j in range(BLOCKS + 1):
            randres(s, f"decoder.conv_blocks.{i}.res.{j}", cin, CH * MULT[level])
            cin = CH * MULT[level]
        if level != 0:
            randconv(s, f"decoder.conv_blocks.{i}.upsample.conv1", cin, 4 * cin, 3)
    randnorm(s, "decoder.norm_out", cin), randconv(s, "decoder.conv_out", cin, 3, 3)
    return s


# --- GigaTok's forward, functionally ------------------------------------------------------------------------


def _c(s, name, x, **kw):
    return F.conv2d(x, s[f"{name}.weight"], s[f"{name}.bias"], **kw)


def _l(s, name, x):
    return x @ s[f"{name}.weight"].t() + s[f"{name}.bias"]


def _ln(s, name, x):
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"])


def _attention(s, name, q, k, v, keep=None):
    """GigaTok's nn.MultiheadAttention: in_proj rows [q | k | v], HEADS heads, out_proj; keep: (B, M) keys."""
    w, b = s[f"{name}.in_proj_weight"].chunk(3), s[f"{name}.in_proj_bias"].chunk(3)
    q, k, v = (rearrange(t @ wi.t() + bi, "b l (h d) -> b h l d", h=HEADS) for t, wi, bi in zip((q, k, v), w, b))
    scores = q @ k.transpose(-1, -2) / (WIDTH // HEADS) ** 0.5  # (B, H, Q, M)
    if keep is not None:
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
    return _l(s, f"{name}.out_proj", rearrange(scores.softmax(-1) @ v, "b h l d -> b l (h d)"))


def _layer(s, name, t, mem, qpos, mpos, keep=None):
    h = _ln(s, f"{name}.norm1", t)
    t = t + _attention(s, f"{name}.self_attn", h + qpos, h + qpos, h)
    h = _ln(s, f"{name}.norm2", t)
    t = t + _attention(s, f"{name}.multihead_attn", h + qpos, mem + mpos, mem, keep)
    return t + _l(s, f"{name}.linear2", F.gelu(_l(s, f"{name}.linear1", _ln(s, f"{name}.norm3", t))))


def _pos(s, name):
    return s[name][:, 0][None]  # (L, 1, D) -> (1, L, D)


def ref_cnn_encoder(s, x):
    """images -> (B, Z, g, g): GigaTok's CNN encoder."""
    h = _c(s, "encoder.conv_in", x, padding=1)
    for i in range(len(MULT)):
        for j in range(BLOCKS):
            h = block(h, s, f"encoder.conv_blocks.{i}.res.{j}")
        if i != len(MULT) - 1:
            h = _c(s, f"encoder.conv_blocks.{i}.downsample.conv", F.pad(h, (0, 1, 0, 1)), stride=2)
    h = block(block(h, s, "encoder.mid.0"), s, "encoder.mid.1")
    return _c(s, "encoder.conv_out", F.silu(gn(h, s, "encoder.norm_out")), padding=1)  # (B, Z, g, g)


def ref_latents(s, x):
    """images -> (B, N, DIM) l2-normalised latents before the code search."""
    h = ref_cnn_encoder(s, x)
    mem = _l(s, "s2to1encoder.encoder_embed", _ln(s, "s2to1encoder.ln_pre", rearrange(h, "b c h w -> b (h w) c")))
    grid = rearrange(mem, "b (h w) d -> b d h w", h=GRID)
    groups = []
    for g in range(N.bit_length()):  # token groups: whole grid twice, then 2, 4, ... blocks, columns split first
        lvl = max(g - 1, 0)
        rows, cols = 2 ** (lvl // 2), 2 ** ((lvl + 1) // 2)
        means = grid.reshape(*grid.shape[:2], rows, GRID // rows, cols, GRID // cols).mean((3, 5))
        groups.append(rearrange(means, "b d r c -> b (r c) d"))
    t = _l(s, "s2to1encoder.global_proj", torch.cat(groups, 1))  # (B, N, W)
    pos, lpos = _pos(s, "s2to1encoder.positional_embedding"), _pos(s, "s2to1encoder.latent_token_positional_embedding")
    t = _layer(s, "s2to1encoder.transformer.0", t, mem, lpos, pos)
    z = F.conv2d(rearrange(_ln(s, "s2to1encoder.ln_post", t), "b n d -> b d 1 n"), s["s2to1encoder.conv_out.weight"],
                 s["s2to1encoder.conv_out.bias"])  # fmt: skip
    z = _c(s, "quant_conv", z)  # (B, DIM, 1, N)
    return F.normalize(rearrange(z, "b c 1 n -> b n c"), dim=-1)


def ref_ids(s, x):
    z, codes = ref_latents(s, x), F.normalize(s["quantize.embedding.weight"], dim=-1)
    return ((z[:, :, None] - codes) ** 2).sum(-1).argmin(-1)  # (B, N)


def ref_decode(s, ids):
    """(B, n) ids -> images; n < N decodes the shorter sequence, as GigaTok's decoder does."""
    q = F.normalize(s["quantize.embedding.weight"], dim=-1)[ids]  # (B, n, DIM)
    z = _c(s, "post_quant_conv", rearrange(q, "b n c -> b c 1 n"))
    mem = _l(s, "s1to2decoder.decoder_embed", _ln(s, "s1to2decoder.ln_pre", rearrange(z, "b c 1 n -> b n c")))
    t = mem[:, :1].expand(-1, GRID * GRID, -1)
    pos, lpos = _pos(s, "s1to2decoder.positional_embedding"), _pos(s, "s1to2decoder.latent_token_positional_embedding")
    t = _layer(s, "s1to2decoder.transformer.0", t, mem, pos, lpos[:, : ids.shape[1]])
    grid = rearrange(_ln(s, "s1to2decoder.ln_post", t), "b (h w) d -> b d h w", h=GRID)
    return ref_cnn_decoder(s, _c(s, "s1to2decoder.conv_out", grid, padding=1))


def ref_cnn_decoder(s, style):
    """(B, Z, g, g) -> images in [-1, 1]: GigaTok's CNN decoder, its adaptive norms reading ``style``."""
    h = block(block(_c(s, "decoder.conv_in", style, padding=1), s, "decoder.mid.0"), s, "decoder.mid.1")
    flat = rearrange(style, "b c h w -> b c (h w)")
    for i in range(len(MULT)):
        a = f"decoder.adaptive.{i}"
        scale = _l(s, f"{a}.gamma", (flat.var(-1, unbiased=True) + 1e-6).sqrt())[..., None, None]
        h = scale * F.group_norm(h, 32, eps=1e-6) + _l(s, f"{a}.beta", flat.mean(-1))[..., None, None]
        for j in range(BLOCKS + 1):
            h = block(h, s, f"decoder.conv_blocks.{i}.res.{j}")
        if i != len(MULT) - 1:
            h = _c(s, f"decoder.conv_blocks.{i}.upsample.conv1", h, padding=1)
            b, c4, hh, ww = h.shape
            h = h.reshape(b, 2, 2, c4 // 4, hh, ww).permute(0, 3, 4, 1, 5, 2).reshape(b, c4 // 4, 2 * hh, 2 * ww)
    return _c(s, "decoder.conv_out", F.silu(gn(h, s, "decoder.norm_out")), padding=1).clamp(-1, 1)


# --- the tests ----------------------------------------------------------------------------------------------


@pytest.fixture
def giga_file(tmp_path):
    state = gigatok_state()
    # Codes spread over the encoder's latent directions, so the search has real choices (random codes
    # leave most latents nearest to one or two of them).
    z = ref_latents(state, torch.rand(4, 3, SIZE, SIZE) * 2 - 1).reshape(-1, DIM)
    state["quantize.embedding.weight"] = z[torch.randperm(z.shape[0])[:K]] + 0.05 * torch.randn(K, DIM)
    torch.save({"model": state, "steps": 5}, tmp_path / "VQ_tiny.pt")
    return state, tmp_path / "VQ_tiny.pt"


def _images():
    return torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_gigatok_matches_the_published_forward(giga_file, tmp_path):
    state, path = giga_file
    model = convert("gigatok", path, tmp_path / "out")
    assert model.encoder.cfg.heads == HEADS and model.decoder.cfg.image_size == SIZE
    x = _images()
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)  # (3, N)
        assert tokens.ids.shape == (3, N, 1) and torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 5  # not one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_decode(state, want), atol=1e-5, rtol=1e-5)


def test_a_prefix_decodes_as_the_published_decoder_on_the_shorter_sequence(giga_file, tmp_path):
    state, path = giga_file
    model = convert("gigatok", path)
    x = _images()
    with torch.no_grad():
        tokens = model.encode(x, num_tokens=torch.tensor([4, 9, N]))
        out = model.decode(tokens)
        for i, n in enumerate([4, 9, N]):
            want = ref_decode(state, tokens.ids[i : i + 1, :n, 0])
            torch.testing.assert_close(out[i : i + 1], want, atol=1e-5, rtol=1e-5)


def test_gigatok_files_are_told_apart_and_bad_ones_refused(giga_file, tmp_path, capsys):
    state, path = giga_file

    def refused(file, *extra):
        assert main(["convert", "--from", "gigatok", str(file), *extra, "--out", str(tmp_path / "x")]) == 2
        return capsys.readouterr().err

    assert main(["convert", "--from", "titok", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "look like gigatok" in capsys.readouterr().err
    torch.save({"model": {**state, "s2to1encoder.query_1d": torch.zeros(N, 1, WIDTH)}}, tmp_path / "q.pt")
    assert "learned 1D queries" in refused(tmp_path / "q.pt")
    (tmp_path / "2d.yaml").write_text("model: {model_cls: VQVitModel2DPlus, init_args: {}}\n")
    assert "VQVitModel2DPlus is not a VQVitModelPlus checkpoint" in refused(path, "--config", str(tmp_path / "2d.yaml"))
    (tmp_path / "mean.yaml").write_text("model: {init_args: {multi_level_query_init: false}}\n")
    assert "multi_level_query_init" in refused(path, "--config", str(tmp_path / "mean.yaml"))
    (tmp_path / "cut.pt").write_bytes(path.read_bytes()[:5000])
    assert "truncated or corrupt" in refused(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty" in refused(tmp_path / "empty.pt")


def test_head_counts_come_from_gigatok_sizes_or_the_config(giga_file, tmp_path, capsys):
    _, path = giga_file
    (tmp_path / "c.yaml").write_text("model: {init_args: {encoder_size: tiny, decoder_size: small}}\n")
    args = [
        "convert",
        "--from",
        "gigatok",
        str(path),
        "--config",
        str(tmp_path / "c.yaml"),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(args) == 2
    assert "model size 'small' has width 512, the weights 256" in capsys.readouterr().err
    (tmp_path / "c.yaml").write_text("model: {init_args: {encoder_size: tiny, decoder_size: tiny}}\n")
    assert convert("gigatok", path, config=tmp_path / "c.yaml").decoder.cfg.heads == HEADS


def test_training_passes_the_gradient_by_the_rotation_trick(giga_file):
    """GigaTok trains with ``rot: true``: the code's gradient reaches the latent through the fixed linear map R
    (R u = c for the unit latent u and its code c), not copied as straight-through copies it."""
    _, path = giga_file
    quantizer = convert("gigatok", path).quantizer.train()
    assert quantizer.cfg.l2_norm
    x = torch.randn(2, 5, DIM, requires_grad=True)
    g = torch.randn(2, 5, DIM)
    out = quantizer(x)
    (out.z_q * g).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    e = F.normalize(x2, dim=-1)
    c = F.normalize(quantizer.embedding.weight.detach(), dim=-1)[out.ids[..., 0]]
    u = e.detach()
    w = F.normalize(u + c, dim=-1)
    rot = torch.eye(DIM) - 2 * w[..., :, None] * w[..., None, :] + 2 * c[..., :, None] * u[..., None, :]
    ((rot @ e[..., None])[..., 0] * g).sum().backward()
    torch.testing.assert_close(out.z_q.detach(), c, atol=1e-5, rtol=0)
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-4)
    x3 = x.detach().clone().requires_grad_()
    (F.normalize(x3, dim=-1) * g).sum().backward()  # what straight-through would give
    assert (x3.grad - x.grad).abs().max() > 0.1


@pytest.mark.parametrize("variant", list(PUBLISHED))
def test_presets_have_the_published_parameter_counts(variant):
    with torch.device("meta"):  # shapes only: the 2.9B XL-XXL builds in a second
        tok = vtok.build(PRESETS / f"vq_gigatok_{variant}.yaml")
    total, alignment_head = PUBLISHED[variant]
    assert sum(p.numel() for p in tok.parameters()) == total - alignment_head
    assert tok.num_tokens == 256 and tok.codebook_sizes == (16384,) and tok.downsample_factor == 16
