"""VAR's multi-scale VQVAE: a synthetic checkpoint in the published layout gives VAR's ids and pixels.

The reference recomputes VAR's published forward with torch's functional ops straight
from the source state dict: the taming-style CNN with fused-qkv attention, 3x3 quant
convs, and the multi-scale residual quantization (area pooling of the residual,
Euclidean nearest code, bicubic upsampling, the phi convolution chosen by VAR's tick
rule, (1 - r) h + r phi(h)). vtok's converted model is checked against it, not
against itself. Released-size check against VAR's own code: README.md, "Public checkpoints".
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.taming_cnn import conv, decoder, encoder, gn, randcnn, randconv, randnorm
from vtok.cli import main
from vtok.convert import convert

CH, MULT, BLOCKS, Z, K = 32, [1, 2], 1, 8, 24  # a 2-level CNN (f2), 8-d codes, 24 of them
SCALES, PHI_COUNT, RATIO = [1, 2, 3, 4], 4, 0.5  # 8 px images -> a 4x4 latent grid


def _attn(s, name, c):
    randnorm(s, f"{name}.norm", c), randconv(s, f"{name}.qkv", c, 3 * c, 1), randconv(s, f"{name}.proj_out", c, c, 1)


def var_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """VAR's VQVAE key layout (models/vqvae.py, basic_vae.py, quant.py) at a tiny size, random values."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    randcnn(s, CH, MULT, BLOCKS, Z, attn=_attn)
    randconv(s, "quant_conv", Z, Z, 3), randconv(s, "post_quant_conv", Z, Z, 3)
    s["quantize.embedding.weight"] = torch.randn(K, Z) * 0.5
    for k in range(PHI_COUNT):
        randconv(s, f"quantize.quant_resi.qresi_ls.{k}", Z, Z, 3)
    s["quantize.ema_vocab_hit_SV"] = torch.zeros(len(SCALES), K)
    return s


# --- VAR's forward, recomputed ------------------------------------------------------------


def _attention(x, s, name):
    b, c, h, w = x.shape
    q, k, v = conv(gn(x, s, f"{name}.norm"), s, f"{name}.qkv").reshape(b, 3, c, h * w).unbind(1)
    weights = torch.softmax(q.transpose(1, 2) @ k * c**-0.5, dim=-1)  # (B, HW_q, HW_k)
    out = (v @ weights.transpose(1, 2)).reshape(b, c, h, w)
    return x + conv(out, s, f"{name}.proj_out")


def ref_latents(s, x):
    return conv(encoder(x, s, MULT, BLOCKS, attn=_attention), s, "quant_conv")


def _phi(s, h, k):
    ticks = np.linspace(1 / 3 / PHI_COUNT, 1 - 1 / 3 / PHI_COUNT, PHI_COUNT)
    i = int(np.argmin(np.abs(ticks - k / (len(SCALES) - 1))))
    return h * (1 - RATIO) + conv(h, s, f"quantize.quant_resi.qresi_ls.{i}") * RATIO


def ref_ids(s, x):
    f = ref_latents(s, x)
    side, e = f.shape[-1], s["quantize.embedding.weight"]
    rest, out = f.clone(), []
    for k, p in enumerate(SCALES):
        r = F.interpolate(rest, size=(p, p), mode="area") if p != side else rest
        flat = r.permute(0, 2, 3, 1).reshape(-1, Z)
        idx = ((flat**2).sum(1, keepdim=True) + (e**2).sum(1) - 2 * flat @ e.T).argmin(1)
        codes = e[idx].reshape(x.shape[0], p, p, Z).permute(0, 3, 1, 2)
        rest = rest - _phi(s, F.interpolate(codes, size=(side, side), mode="bicubic") if p != side else codes, k)
        out.append(idx.reshape(x.shape[0], p * p))
    return torch.cat(out, 1)


def ref_decode(s, ids):
    e, side, f, start = s["quantize.embedding.weight"], SCALES[-1], 0, 0
    for k, p in enumerate(SCALES):
        codes = e[ids[:, start : start + p * p]].reshape(ids.shape[0], p, p, Z).permute(0, 3, 1, 2)
        f = f + _phi(s, F.interpolate(codes, size=(side, side), mode="bicubic") if p != side else codes, k)
        start += p * p
    return decoder(conv(f, s, "post_quant_conv"), s, MULT, BLOCKS, attn=_attention)


@pytest.fixture
def var_file(tmp_path):
    state = var_state()
    torch.save(state, tmp_path / "vae.pth")
    (tmp_path / "var.yaml").write_text(f"v_patch_nums: {SCALES}\n")  # the tiny latent grid is 4x4, not 16x16
    return state, tmp_path / "vae.pth"


def test_var_matches_the_published_forward(var_file, tmp_path):
    state, path = var_file
    model = convert("var-vqvae", path, tmp_path / "out", config=tmp_path / "var.yaml")
    assert model.quantizer.cfg.phi_count == PHI_COUNT and model.quant_conv.kernel_size == (3, 3)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)
        assert tokens.ids.shape == (3, sum(p * p for p in SCALES), 1)
        assert tokens.scales == tuple((p, p) for p in SCALES)
        assert torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 4  # the check is not passed by one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_decode(state, want), atol=1e-4, rtol=1e-4)


def test_var_and_taming_files_are_told_apart(var_file, tmp_path, capsys):
    _, path = var_file
    assert main(["convert", "--from", "taming-vqgan", str(path), "--out", str(tmp_path / "a")]) == 2
    assert "look like var-vqvae" in capsys.readouterr().err
    taming = {k: v for k, v in var_state().items() if not k.startswith("quantize.") or "embedding" in k}
    torch.save(taming, tmp_path / "taming.pth")
    assert main(["convert", "--from", "var-vqvae", str(tmp_path / "taming.pth"), "--out", str(tmp_path / "b")]) == 2
    assert "not a var-vqvae checkpoint" in capsys.readouterr().err


class TrainArgs:  # a training script's own class, pickled beside the weights
    def __init__(self):
        self.lr = 1e-4


def test_an_extra_pickled_object_beside_the_tensors_is_named_and_the_tensors_convert(var_file, tmp_path, caplog):
    state, _ = var_file
    torch.save({**state, "args": TrainArgs()}, tmp_path / "with_args.pth")
    with caplog.at_level(logging.WARNING, logger="vtok.convert"):
        model = convert("var-vqvae", tmp_path / "with_args.pth", config=tmp_path / "var.yaml")
    assert f"read its {len(state)} tensors; left out 1 other entries: 'args' (an inert " in caplog.text
    assert "TrainArgs object)" in caplog.text
    assert model.quantizer.cfg.phi_count == PHI_COUNT


def test_a_file_without_tensors_says_what_it_holds(tmp_path, capsys):
    torch.save({"args": TrainArgs(), "epoch": 3}, tmp_path / "args.pth")
    assert main(["convert", "--from", "var-vqvae", str(tmp_path / "args.pth"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no tensor state dict" in err
    assert "it holds a dict of 2 entries ('args', 'epoch')" in err
