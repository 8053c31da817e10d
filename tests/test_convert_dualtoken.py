"""DualToken: a synthetic checkpoint in the published layout gives DualToken's ids, pixels and semantic features.

The reference recomputes DualToken's forward (songweii/DualToken, modeling_rqvaesiglip.py) with torch's
functional ops straight from the source state dict: transformers' SigLIP vision tower (tanh GELU, LayerNorm
eps 1e-6), the tapped blocks (pixel + weighted shortcut, semantic), the attention projections (narrowing:
heads averaged; widening: causal, heads concatenated; k without bias; gated-GELU MLP), the shared-codebook
residual quantizers (padding row never searched), the bilinear resize to the decoder grid, the post-quant
residual block, taming's decoder, and the semantic codes through the remaining blocks, the final LayerNorm and
the probe-attention pooling head. vtok's converted model is checked against it, not against itself.
Released-size check against DualToken's own code (commit 29e7c84d, siglip_384_rvq8 on SigLIP2 So400m/14-384,
random weights, 2 built-in crops): ids 23328/23328 equal, pixels within 2.6e-5, semantic features within 2.2e-6.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.siglip_layout import rand_siglip_vision
from tests.taming_cnn import block, decoder, randattn, randconv, randlin, randnorm, randres
from vtok.cli import main
from vtok.config import build_component
from vtok.convert import convert

W, DEPTH, HEADS, MLP, PATCH, SIZE = 128, 4, 2, 478, 6, 32  # 32 px / patch 6 -> 5x5 tokens, 2 px unseen; heads = W // 64
SIDE, GRID = 5, 4  # token grid, decoder grid (bilinear 5 -> 4)
RECON, SHORT, SEM, WEIGHT = 2, 1, 3, 0.6  # tapped blocks (1-based), shortcut weight
D, LEVELS, K = 8, 2, 64  # code dim, residual depth, codebook size
CH, MULT, Z = 32, [1, 1, 2, 2], 64  # taming decoder: 4 -> 32 px
V = "siglip_model.vision_model"


def _proj(s, name, cin, cout):
    wide = max(cin, cout)
    randnorm(s, f"{name}.norm1", cin), randnorm(s, f"{name}.norm3", cin), randnorm(s, f"{name}.norm2", cout)
    randlin(s, f"{name}.attn.qkv", cin, 3 * wide, bias=False)
    s[f"{name}.attn.q_bias"], s[f"{name}.attn.v_bias"] = torch.randn(wide) * 0.05, torch.randn(wide) * 0.05
    s[f"{name}.attn.zero_k_bias"] = torch.zeros(wide)
    randlin(s, f"{name}.attn.proj", cout, cout), randlin(s, f"{name}.proj", cin, cout)
    randnorm(s, f"{name}.mlp.norm", cout)
    randlin(s, f"{name}.mlp.w0", cout, 2 * cout), randlin(s, f"{name}.mlp.w1", cout, 2 * cout)
    randlin(s, f"{name}.mlp.w2", 2 * cout, cout)


def dualtoken_state():
    torch.manual_seed(0)
    s = {}
    rand_siglip_vision(s, V, W, DEPTH, MLP, PATCH, SIDE)
    randlin(s, "siglip_model.text_model.head", W, W)  # the text tower: dropped
    s["siglip_model.logit_scale"], s["siglip_model.logit_bias"] = torch.ones(1), torch.zeros(1)
    for name in ("prequant_sem", "prequant_pix", "prequant_shortcut"):
        _proj(s, name, W, D)
    for name in ("postquant_sem", "postquant_pix"):
        _proj(s, name, D, W)
    for q in ("quantizer_sem", "quantizer_pix"):
        codes = torch.cat([torch.randn(K, D) * 0.5, torch.zeros(1, D)])  # the padding row last
        for k in range(LEVELS):  # one module saved once per level
            s[f"{q}.codebooks.{k}.weight"] = codes
            s[f"{q}.codebooks.{k}.cluster_size_ema"] = torch.ones(K)
            s[f"{q}.codebooks.{k}.embed_ema"] = codes[:-1].clone()
    randres(s, "post_quant_conv", W, Z, k1=1)
    randconv(s, "decoder.conv_in", Z, CH * MULT[-1], 3)
    for m in ("block_1", "block_2"):
        randres(s, f"decoder.mid.{m}", CH * MULT[-1], CH * MULT[-1])
    randattn(s, "decoder.mid.attn_1", CH * MULT[-1])
    cin = CH * MULT[-1]
    for i in reversed(range(len(MULT))):
        for j in range(2):
            randres(s, f"decoder.up.{i}.block.{j}", cin, CH * MULT[i])
            cin = CH * MULT[i]
            if i == len(MULT) - 1:
                randattn(s, f"decoder.up.{i}.attn.{j}", cin)
        if i:
            randconv(s, f"decoder.up.{i}.upsample.conv", cin, cin, 3)
    randnorm(s, "decoder.norm_out", cin), randconv(s, "decoder.conv_out", cin, 3, 3)
    return s


# --- DualToken's forward, functionally -------------------------------------------------------------


def _ln(x, s, n, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], s[f"{n}.weight"], s[f"{n}.bias"], eps)


def _l(x, s, n):
    return F.linear(x, s[f"{n}.weight"], s.get(f"{n}.bias"))


def _heads(t, h):
    return t.reshape(t.shape[0], t.shape[1], h, -1).transpose(1, 2)  # (B, h, N, d)


def _softmax_attn(q, k, v, causal=False):
    a = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if causal:
        n = a.shape[-1]
        a = a.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return a.softmax(-1) @ v


def _layer(t, s, i):
    b = f"{V}.encoder.layers.{i}"
    h = _ln(t, s, f"{b}.layer_norm1")
    q, k, v = (_heads(_l(h, s, f"{b}.self_attn.{p}_proj"), HEADS) for p in "qkv")
    o = _softmax_attn(q, k, v).transpose(1, 2).reshape(t.shape)
    t = t + _l(o, s, f"{b}.self_attn.out_proj")
    return t + _l(F.gelu(_l(_ln(t, s, f"{b}.layer_norm2"), s, f"{b}.mlp.fc1"), approximate="tanh"), s, f"{b}.mlp.fc2")


def _projection(x, s, n, cin, cout, causal):
    heads = max(cin, cout) // min(cin, cout)
    h = _ln(x, s, f"{n}.norm1", 1e-5)
    wide = max(cin, cout)
    qkv = h @ s[f"{n}.attn.qkv.weight"].T + torch.cat([s[f"{n}.attn.q_bias"], torch.zeros(wide), s[f"{n}.attn.v_bias"]])
    q, k, v = (_heads(qkv[..., j * wide : (j + 1) * wide], heads) for j in range(3))
    o = _softmax_attn(q, k, v, causal)  # (B, heads, N, min)
    o = o.mean(1) if cin > cout else o.transpose(1, 2).reshape(x.shape[0], x.shape[1], cout)
    y = _l(_ln(x, s, f"{n}.norm3", 1e-5), s, f"{n}.proj") + _l(o, s, f"{n}.attn.proj")
    m = _ln(_ln(y, s, f"{n}.norm2", 1e-5), s, f"{n}.mlp.norm")
    return y + _l(F.gelu(_l(m, s, f"{n}.mlp.w0"), approximate="tanh") * _l(m, s, f"{n}.mlp.w1"), s, f"{n}.mlp.w2")


def _rq(z, s, q):
    e = s[f"{q}.codebooks.0.weight"][:-1]
    r, ids = z.reshape(-1, D).clone(), []
    for _ in range(LEVELS):
        idx = ((r**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * r @ e.T).argmin(1)
        r = r - e[idx]
        ids.append(idx)
    return torch.stack(ids, -1).reshape(z.shape[0], -1, LEVELS)


def ref_ids(s, x):
    t = F.conv2d(
        x, s[f"{V}.embeddings.patch_embedding.weight"], s[f"{V}.embeddings.patch_embedding.bias"], stride=PATCH
    )
    t = t.flatten(2).transpose(1, 2) + s[f"{V}.embeddings.position_embedding.weight"]
    for i in range(SEM):
        t = _layer(t, s, i)
        if i + 1 == RECON:
            pix = _projection(t, s, "prequant_pix", W, D, False)
        if i + 1 == SHORT:
            short = _projection(t, s, "prequant_shortcut", W, D, False)
    sem = _projection(t, s, "prequant_sem", W, D, False)
    return torch.cat([_rq(sem, s, "quantizer_sem"), _rq(pix + WEIGHT * short, s, "quantizer_pix")], -1)


def ref_pixels(s, ids):
    e = s["quantizer_pix.codebooks.0.weight"]
    z = _projection(e[ids[..., LEVELS:]].sum(-2), s, "postquant_pix", D, W, True)  # (B, N, W)
    z = F.interpolate(z.transpose(1, 2).reshape(-1, W, SIDE, SIDE), size=(GRID, GRID), mode="bilinear")
    return decoder(block(z, s, "post_quant_conv"), s, MULT, 1)  # taming's decoder: 2 resnet blocks a level


def ref_semantic(s, ids):
    t = _projection(s["quantizer_sem.codebooks.0.weight"][ids[..., :LEVELS]].sum(-2), s, "postquant_sem", D, W, True)
    for i in range(SEM, DEPTH):
        t = _layer(t, s, i)
    t = _ln(t, s, f"{V}.post_layernorm")
    w, b = s[f"{V}.head.attention.in_proj_weight"], s[f"{V}.head.attention.in_proj_bias"]
    q = _heads(s[f"{V}.head.probe"].expand(t.shape[0], 1, W) @ w[:W].T + b[:W], HEADS)
    k, v = _heads(t @ w[W : 2 * W].T + b[W : 2 * W], HEADS), _heads(t @ w[2 * W :].T + b[2 * W :], HEADS)
    p = _l(_softmax_attn(q, k, v).transpose(1, 2).reshape(t.shape[0], 1, W), s, f"{V}.head.attention.out_proj")
    p = p + _l(
        F.gelu(_l(_ln(p, s, f"{V}.head.layernorm"), s, f"{V}.head.mlp.fc1"), approximate="tanh"), s, f"{V}.head.mlp.fc2"
    )
    return t, p[:, 0]


@pytest.fixture
def dualtoken_file(tmp_path):
    state = dualtoken_state()
    torch.save({"state_dict": state}, tmp_path / "dualtoken.pt")
    cfg = {"rqvaesiglip": {"layer_recon": RECON, "layer_sem": SEM, "layer_shortcut": SHORT, "weight_shortcut": WEIGHT,
                           "decoder_latent_shape": [GRID, GRID], "ddconfig": {"resolution": SIZE},
                           "vq_sem": {"decay": 0.99, "shared_codebook": True}}}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return state, tmp_path / "dualtoken.pt"


def test_dualtoken_matches_the_published_forward(dualtoken_file, tmp_path):
    state, path = dualtoken_file
    model = convert("dualtoken", path, tmp_path / "out", config=tmp_path / "config.json")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)
        assert tokens.ids.shape == (2, SIDE * SIDE, 2 * LEVELS)
        assert torch.equal(tokens.ids, want)
        assert len(want[..., 0].unique()) > 4 and len(want[..., LEVELS].unique()) > 4  # not one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_pixels(state, want), atol=1e-4, rtol=1e-4)
        semantic, pooled = ref_semantic(state, want)
        torch.testing.assert_close(model.semantic_features(tokens), semantic, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.pooled_features(tokens), pooled, atol=1e-4, rtol=1e-4)


def test_dualtoken_files_are_told_apart(dualtoken_file, tmp_path, capsys):
    state, path = dualtoken_file
    assert main(["convert", "--from", "rq-vae", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "look like dualtoken" in capsys.readouterr().err
    split = {**state, "quantizer_sem.codebooks.1.weight": state["quantizer_sem.codebooks.1.weight"] + 1}
    torch.save({"state_dict": split}, tmp_path / "split.pt")
    assert main(["convert", "--from", "dualtoken", str(tmp_path / "split.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "codebook per depth" in capsys.readouterr().err
    cut = {k: v for k, v in state.items() if not k.startswith(f"{V}.head.layernorm")}
    torch.save({"state_dict": cut}, tmp_path / "cut.pt")
    assert main(["convert", "--from", "dualtoken", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "c")]) == 2
    assert "head.layernorm" in capsys.readouterr().err
    (tmp_path / "half.pt").write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["convert", "--from", "dualtoken", str(tmp_path / "half.pt"), "--out", str(tmp_path / "d")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    (tmp_path / "empty.pt").write_bytes(b"")
    assert main(["convert", "--from", "dualtoken", str(tmp_path / "empty.pt"), "--out", str(tmp_path / "e")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_semantic_codebook_updates_once_per_step():
    """DualToken's rq_ema: every level searches the step's starting codebook; one EMA write from all levels after."""
    q = build_component("quantizer", {"name": "rq_shared_step", "dim": 4, "depth": 3, "codebook_size": 8,
                                      "decay": 0.9, "restart_unused_codes": False})  # fmt: skip
    z = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(2))
    e, count0, sums0 = q.codebook.detach().clone(), q.cluster_size_ema.clone(), q.embed_ema.clone()
    want = q.eval().quantize_ids(z)
    r, counts, sums = z.reshape(-1, 4).clone(), torch.zeros(8), torch.zeros(8, 4)
    for k in range(3):
        counts += torch.bincount(want[..., k].flatten(), minlength=8)
        sums.index_add_(0, want[..., k].flatten(), r)
        r = r - e[want[..., k].flatten()]
    assert torch.equal(q.train()(z).ids, want)  # no level saw a codebook this step already moved
    count, embed = 0.9 * count0 + 0.1 * counts, 0.9 * sums0 + 0.1 * sums
    n = count.sum()
    torch.testing.assert_close(q.codebook, embed / (n * (count + 1e-5) / (n + 8 * 1e-5))[:, None])
