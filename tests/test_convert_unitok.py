"""UniTok: a synthetic checkpoint in the released layout gives UniTok's ids and pixels through ``vtok convert``.

The reference recomputes UniTok's published forward (``img_to_idx`` / ``idx_to_img`` of
``models/unitok.py``) with torch's functional ops, straight from the source state dict
by UniTok's key names: the ViTamin tower (stem, MBConv stages with pre-norm channel
LayerNorm, strided-conv pool, ViT blocks with GeGLU MLPs), the attention projection
(q/v biases, no k bias; heads averaged when narrowing, concatenated when widening), the
multi-codebook search (each chunk l2-normalised, largest cosine with the l2-normalised
codes; ids (B, codebooks, L)), and the decoder (ViT blocks, 2x nearest-upsampling
convolutions, inverted MBConv blocks, inverted stem, clamp). vtok's converted model is
checked against these, not against itself. Released-size check against UniTok's own
code: /work/ref/unitok/RESULT.txt.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vtok
from vtok.cli import main
from vtok.convert import convert

SIZE, STEM, DIMS, DEPTHS, WIDTH, DEPTH = 32, 8, [8, 16], [1, 2], 128, 1  # width 128: 2 ViT heads of 64
Z, C, K, UP = 16, 4, 32, ([16, 8], [2, 1])  # 16 code channels in 4 codebooks of 32 codes; upsampler widths / depths
E, D = "encoder.", "decoder."


def _vtok_layout() -> dict[str, torch.Tensor]:
    """The vtok model these settings convert to (its names and shapes only)."""
    cfg = {
        "name": "grid",
        "encoder": {"name": "unitok", "img_size": SIZE, "stem_width": STEM, "stage_dims": [*DIMS, WIDTH],
                    "stage_depths": DEPTHS, "depth": DEPTH, "num_heads": WIDTH // 64, "z_channels": Z},
        "quantizer": {"name": "mcq", "dim": Z, "codebooks": C, "codebook_size": K},
        "decoder": {"name": "unitok", "in_channels": Z, "width": WIDTH, "depth": DEPTH, "num_heads": WIDTH // 64,
                    "up_dims": UP[0], "up_depths": UP[1]},
    }  # fmt: skip
    return vtok.build({"model": cfg}).state_dict()


def _random(name: str, like: torch.Tensor) -> torch.Tensor:
    if name.endswith(("bias", "_bias")):
        return 0.05 * torch.randn_like(like)
    if like.dim() == 1:  # a norm's scale
        return 1 + 0.1 * torch.randn_like(like)
    return torch.randn_like(like) / (like[0].numel() ** 0.5)


def unitok_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """UniTok's key layout (``UniTok.state_dict()``), tiny, random values; CLIP-training parts included."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    for name, t in _vtok_layout().items():
        if name.startswith(("quant_conv.", "post_quant_conv.", "quantizer.")):
            continue
        for ours, theirs in (
            ("encoder.tower.", E),
            ("encoder.proj.", "quant_proj."),
            ("decoder.proj.", "post_quant_proj."),
        ):
            name = name.replace(ours, theirs, 1) if name.startswith(ours) else name
        s[name] = _random(name, t)
    for proj, wide in (("quant_proj", WIDTH), ("post_quant_proj", WIDTH)):
        s[f"{proj}.attn.zero_k_bias"] = torch.zeros(wide)
    s[E + "pos_embed"] = torch.zeros(1, 1, WIDTH)
    for c in range(C):
        s[f"quantizer.codebooks.{c}.codebook.weight"] = torch.randn(K, Z // C)
        s[f"quantizer.codebooks.{c}.vocab_usage"] = torch.rand(K)
    s |= {"text_encoder.token_embedding.weight": torch.randn(10, 8), "fc_norm.weight": torch.ones(WIDTH),
          "fc_norm.bias": torch.zeros(WIDTH), "projection.weight": torch.randn(8, WIDTH),
          "projection.bias": torch.zeros(8), "logit_scale": torch.tensor(2.6)}  # fmt: skip
    return s


# --- UniTok's forward, recomputed -----------------------------------------------------------------


def _ln2d(x, s, name):
    return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], s[f"{name}.weight"], s[f"{name}.bias"], 1e-6).permute(
        0, 3, 1, 2
    )


def _conv(x, s, name, stride=1, groups=1):
    w = s[f"{name}.weight"]
    return F.conv2d(x, w, s[f"{name}.bias"], stride=stride, padding=w.shape[-1] // 2, groups=groups)


def _linear(x, s, name):
    return F.linear(x, s[f"{name}.weight"], s.get(f"{name}.bias"))


def _ln(x, s, name, eps=1e-6):
    return F.layer_norm(x, x.shape[-1:], s[f"{name}.weight"], s[f"{name}.bias"], eps)


def _geglu(x, s, name):
    h = _ln(x, s, f"{name}.norm")
    return _linear(
        F.gelu(_linear(h, s, f"{name}.w0"), approximate="tanh") * _linear(h, s, f"{name}.w1"), s, f"{name}.w2"
    )


def _mbconv(x, s, name, stride):
    """MbConvLNBlock: pre-norm, 1x1 expand, GELU, depthwise 3x3 (strided), GELU, 1x1; avg-pool shortcut when strided."""
    if stride == 2:
        short = F.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
        short = _conv(short, s, f"{name}.shortcut.expand") if f"{name}.shortcut.expand.weight" in s else short
    else:
        short = _conv(x, s, f"{name}.shortcut") if f"{name}.shortcut.weight" in s else x
    h = F.gelu(_conv(_ln2d(x, s, f"{name}.pre_norm"), s, f"{name}.conv1_1x1"))
    mid = h.shape[1]
    h = F.gelu(_conv(h, s, f"{name}.conv2_kxk", stride=stride, groups=mid))
    return _conv(h, s, f"{name}.conv3_1x1") + short


def _vit_block(x, s, name, heads):
    b, n, d = x.shape
    qkv = _linear(_ln(x, s, f"{name}.norm1"), s, f"{name}.attn.qkv").reshape(b, n, 3, heads, d // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
    x = x + _linear(att, s, f"{name}.attn.proj")
    return x + _geglu(_ln(x, s, f"{name}.norm2"), s, f"{name}.mlp")


def _attn_proj(x, s, name, out_dim, heads):
    """AttnProjection: proj(norm3 x) + attn(norm1 x), then + mlp(norm2 .); torch LayerNorm eps 1e-5."""
    b, n, in_dim = x.shape
    wide = max(in_dim, out_dim)
    bias = torch.cat([s[f"{name}.attn.q_bias"], s[f"{name}.attn.zero_k_bias"], s[f"{name}.attn.v_bias"]])
    qkv = F.linear(_ln(x, s, f"{name}.norm1", 1e-5), s[f"{name}.attn.qkv.weight"], bias)
    q, k, v = qkv.reshape(b, n, 3, heads, wide // heads).permute(2, 0, 3, 1, 4)
    att = F.scaled_dot_product_attention(q, k, v)  # (B, h, N, d)
    att = att.mean(1) if in_dim > out_dim else att.transpose(1, 2).reshape(b, n, -1)
    h = _linear(_ln(x, s, f"{name}.norm3", 1e-5), s, f"{name}.proj") + _linear(att, s, f"{name}.attn.proj")
    return h + _geglu(_ln(h, s, f"{name}.norm2", 1e-5), s, f"{name}.mlp")


def ref_ids(s, x):
    """UniTok.img_to_idx: (B, codebooks, L)."""
    st = E + "patch_embed.backbone."
    h = _conv(F.gelu(_ln2d(_conv(x, s, st + "stem.conv1", stride=2), s, st + "stem.norm1")), s, st + "stem.conv2")
    for stage, depth in enumerate(DEPTHS):
        for j in range(depth):
            h = _mbconv(h, s, f"{st}stages.{stage}.{j}", 2 if j == 0 else 1)
    h = _conv(_ln2d(h, s, st + "pool.norm"), s, st + "pool.proj", stride=2)
    t = h.flatten(2).transpose(1, 2)  # (B, L, W)
    for i in range(DEPTH):
        t = _vit_block(t, s, f"{E}blocks.{i}", WIDTH // 64)
    t = _attn_proj(_ln(t, s, E + "norm"), s, "quant_proj", Z, WIDTH // Z)  # (B, L, Z)
    ids = []
    for c, chunk in enumerate(t.split(Z // C, -1)):
        codes = F.normalize(s[f"quantizer.codebooks.{c}.codebook.weight"], dim=1)
        ids.append((F.normalize(chunk, dim=-1) @ codes.T).argmax(-1))
    return torch.stack(ids, 1)


def _up(x, s, name):
    return _conv(F.interpolate(x, scale_factor=2, mode="nearest"), s, name)


def _inv_mbconv(x, s, name, up):
    if up:
        short = _up(x, s, f"{name}.shortcut.conv")
    else:
        short = _conv(x, s, f"{name}.shortcut") if f"{name}.shortcut.weight" in s else x
    h = F.gelu(_conv(_ln2d(x, s, f"{name}.pre_norm"), s, f"{name}.conv1_1x1"))
    h = _up(h, s, f"{name}.up.conv") if up else h
    h = F.gelu(_conv(h, s, f"{name}.conv2_kxk", groups=h.shape[1]))
    return _conv(h, s, f"{name}.conv3_1x1") + short


def ref_decode(s, ids):
    """UniTok.idx_to_img: (B, codebooks, L) -> (B, 3, H, W) in [-1, 1]."""
    t = torch.cat([F.normalize(s[f"quantizer.codebooks.{c}.codebook.weight"], dim=1)[ids[:, c]] for c in range(C)], -1)
    t = _attn_proj(t, s, "post_quant_proj", WIDTH, WIDTH // Z)
    for i in range(DEPTH):
        t = _vit_block(t, s, f"{D}blocks.{i}", WIDTH // 64)
    t = _ln(t, s, D + "norm")
    side = int(t.shape[1] ** 0.5)
    h = _up(t.transpose(1, 2).reshape(t.shape[0], WIDTH, side, side), s, D + "up_conv1.conv")
    for stage, depth in zip((2, 3), UP[1]):
        for j in range(depth):
            h = _inv_mbconv(h, s, f"{D}up_conv{stage}.{j}", up=j == 0)
    h = F.gelu(_ln2d(_up(h, s, D + "up_conv4.conv1.conv"), s, D + "up_conv4.norm1"))
    return _conv(h, s, D + "up_conv4.conv2").clamp(-1, 1)


@pytest.fixture
def unitok_file(tmp_path):
    state = unitok_state()
    args = {"model": "vitamin_large", "img_size": SIZE, "num_query": 0, "vq_beta": 0.25}
    torch.save({"args": args, "epoch": 1, "iter": 10, "trainer": {"config": {}, "unitok": state}}, tmp_path / "u.pth")
    return state, tmp_path / "u.pth"


def test_unitok_matches_the_published_forward(unitok_file, tmp_path):
    state, path = unitok_file
    (tmp_path / "args.json").write_text(f'{{"img_size": {SIZE}, "num_query": 0}}')
    model = convert("unitok", path, tmp_path / "out", config=tmp_path / "args.json")
    assert model.quantizer.codebook_sizes == (K,) * C
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)  # (2, C, L)
        assert tokens.ids.shape == (2, (SIZE // 16) ** 2, C) and tokens.codebook_sizes == (K,) * C
        assert torch.equal(tokens.ids.transpose(1, 2), want)
        assert all(len(want[:, c].unique()) > 1 for c in range(C))  # not one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_decode(state, want), atol=1e-5, rtol=1e-5)
    loaded = vtok.load(tmp_path / "out")
    assert torch.equal(loaded.encode(x).ids, tokens.ids)


def test_unitok_files_are_told_apart_and_damage_is_named(unitok_file, tmp_path, capsys):
    _, path = unitok_file
    assert main(["convert", "--from", "rq-vae", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "look like unitok" in capsys.readouterr().err
    (tmp_path / "cut.pth").write_bytes(path.read_bytes()[:5000])
    assert main(["convert", "--from", "unitok", str(tmp_path / "cut.pth"), "--out", str(tmp_path / "b")]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    (tmp_path / "empty.pth").write_bytes(b"")
    assert main(["convert", "--from", "unitok", str(tmp_path / "empty.pth"), "--out", str(tmp_path / "c")]) == 2
    assert "empty" in capsys.readouterr().err
    torch.save({"state_dict": {"quantize.embedding.weight": torch.randn(4, 4)}}, tmp_path / "other.pt")
    assert main(["convert", "--from", "unitok", str(tmp_path / "other.pt"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is not a unitok checkpoint" in err and len(err.splitlines()) == 1


def test_unitok_register_tokens_are_refused(unitok_file, tmp_path, capsys):
    state, _ = unitok_file
    torch.save({"trainer": {"unitok": {**state, E + "reg_token": torch.zeros(1, 4, WIDTH)}}}, tmp_path / "reg.pth")
    assert main(["convert", "--from", "unitok", str(tmp_path / "reg.pth"), "--out", str(tmp_path / "o")]) == 2
    assert "register tokens" in capsys.readouterr().err


def test_mcq_training_losses_and_gradients_are_unitoks(unitok_file, tmp_path):
    """UniTok's VectorQuantizerM in training: per codebook beta |sg(e) - z|^2 + |e - sg(z)|^2 on the normalised
    chunk z, averaged over codebooks, and a straight-through output whose gradient reaches the latents through the
    norm: the loss, the output and the gradients to the latents and to the raw codebooks are UniTok's."""
    state, path = unitok_file
    q = convert("unitok", path).quantizer.train()
    x = torch.randn(2, 6, Z, requires_grad=True)
    out = q(x)
    weights = [state[f"quantizer.codebooks.{c}.codebook.weight"].clone().requires_grad_() for c in range(C)]
    loss, hats = 0.0, []
    for c, chunk in enumerate(x.split(Z // C, -1)):
        z = F.normalize(chunk.reshape(-1, Z // C), dim=-1)
        codes = F.normalize(weights[c], dim=1)
        hat = codes[(z.detach() @ codes.T).argmax(1)]
        loss = loss + 0.25 * F.mse_loss(hat.detach(), z) + F.mse_loss(hat, z.detach())
        hats.append((hat.detach() - z.detach()) + z)
    loss, want = loss / C, torch.cat(hats, -1).view(2, 6, Z)
    ours = out.losses["codebook"] + out.losses["commit"]
    torch.testing.assert_close(ours, loss)
    torch.testing.assert_close(out.z_q, want)
    g = torch.randn_like(want)
    got = torch.autograd.grad(ours + (out.z_q * g).sum(), [x, q.codes])
    ref = torch.autograd.grad(loss + (want * g).sum(), [x, *weights])
    torch.testing.assert_close(got[0], ref[0])
    torch.testing.assert_close(got[1], torch.stack(ref[1:]))


def test_unitok_tokens_feed_the_stacked_codes_gpt():
    """The tiny preset's stacked codes (B, L, 4) train vtok's GPT: the loss falls on one repeated batch."""
    from vtok.ar_models.gpt import GPT

    torch.manual_seed(0)
    tok = vtok.build(Path(__file__).resolve().parent.parent / "configs/tokenizer/vq_unitok_tiny.yaml").eval()
    with torch.no_grad():
        tokens = tok.encode(torch.rand(4, 3, 32, 32) * 2 - 1)
    assert tokens.ids.shape == (4, 4, 4) and tokens.codebook_sizes == (64,) * 4
    gpt = GPT(GPT.Config(codebook_sizes=list(tokens.codebook_sizes), grid=list(tokens.grid), num_classes=0,
                         dim=32, depth=1, heads=2, depth_layers=1))  # fmt: skip
    gpt.init_embeddings_from(tok)
    opt = torch.optim.AdamW(gpt.parameters(), lr=3e-3)
    first = None
    for _ in range(20):
        loss, _ = gpt(tokens.ids, None)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first
