"""FlexTok: a synthetic checkpoint in the released layout gives FlexTok's ids and its flow-decoded pixels.

The reference recomputes FlexTok's published forward with torch's functional ops straight from the source
state dict: its VAE is diffusers' ``AutoencoderKL`` (the class FlexTok wraps) loaded with the file's
``vae.vae.*`` tensors; the register encoder (2x2 latent patches, fixed position table, registers appended,
"causal_last" mask, norm-free pre-norm blocks with QK-norm, scale 8/head_dim and SwiGLU), FSQ (tanh bound,
rounding, mixed-radix ids with the first channel least significant), and the decoder (nested-dropout mask
token after the register positions, adaLN-zero blocks with one modulation set for patches and one for
registers, a time-modulated head, Euler steps from t = 1 with classifier-free or APG guidance against the
learned null condition) are written out below. vtok's converted model is checked against these, not against
itself. Check against FlexTok's own code: README.md, "Public checkpoints".
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from vtok.cli import main
from vtok.convert import convert

C, VAE_CH, W, HD, N, DEPTH, LEVELS, SIZE = 4, [8, 16], 32, 16, 8, 2, [5, 4, 3], 16  # f2 VAE, 16 px images
HID = int(2 * int(W * 4.0) / 3)
ENC, DEC = "encoder.module_dict.", "decoder.module_dict."
VAE_CFG = dict(latent_channels=C, block_out_channels=VAE_CH, layers_per_block=1, norm_num_groups=4,
               down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)  # fmt: skip
SCALE = 0.7


def _vae():
    from diffusers.models import AutoencoderKL

    return AutoencoderKL(**VAE_CFG)


def _block(s, prefix, sets):
    for name in ("wq", "wk", "wv", "proj"):
        s[f"{prefix}.attn.{name}.weight"] = torch.randn(W, W) / W**0.5
    s[f"{prefix}.mlp.fc1.weight"] = torch.randn(HID, W) / W**0.5
    s[f"{prefix}.mlp.fc3.weight"] = torch.randn(HID, W) / W**0.5
    s[f"{prefix}.mlp.fc2.weight"] = torch.randn(W, HID) / HID**0.5
    if sets:
        s[f"{prefix}.adaLN_modulation.1.weight"] = torch.randn(sets * 6 * W, W) * 0.1
        s[f"{prefix}.adaLN_modulation.1.bias"] = torch.randn(sets * 6 * W) * 0.1


def flextok_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """FlexTok's released key layout (SequentialModuleDictWrapper module names), tiny, random values."""
    torch.manual_seed(seed)
    s = {f"vae.vae.{k}": v.clone() for k, v in _vae().state_dict().items()}
    p2c = C * 4
    s[ENC + "enc_patch_emb.patch_proj.weight"], s[ENC + "enc_patch_emb.patch_proj.bias"] = torch.randn(W, p2c) / 4, torch.randn(W) * 0.1  # fmt: skip
    s[ENC + "enc_posemb_module.posembs"] = torch.randn(1, W, 4, 4)
    s[ENC + "enc_register_module.registers"] = torch.randn(N, W)
    for i in range(DEPTH):
        _block(s, f"{ENC}enc_transformer.blocks.{i}", 0)
        _block(s, f"{DEC}dec_transformer.blocks.{i}", 2)
    s[ENC + "enc_to_latents.proj.weight"], s[ENC + "enc_to_latents.proj.bias"] = torch.randn(3, W) * 0.5, torch.randn(3) * 0.1  # fmt: skip
    s[DEC + "dec_from_latents.proj.weight"], s[DEC + "dec_from_latents.proj.bias"] = torch.randn(W, 3), torch.randn(W) * 0.1  # fmt: skip
    s[DEC + "dec_registers_posemb_module.posembs"] = torch.randn(1, 1, W, N)
    s[DEC + "dec_nested_dropout.dropout_mask_token"] = torch.randn(W)
    s[DEC + "dec_latent_dropout.nullcond"] = torch.randn(W)
    s[DEC + "dec_noise_patch_emb.patch_proj.weight"], s[DEC + "dec_noise_patch_emb.patch_proj.bias"] = torch.randn(W, p2c) / 4, torch.randn(W) * 0.1  # fmt: skip
    s[DEC + "dec_patches_posemb_module.posembs"] = torch.randn(1, W, 4, 4)
    s[DEC + "dec_time_embedder.mlp.0.weight"], s[DEC + "dec_time_embedder.mlp.0.bias"] = torch.randn(W, 16) / 4, torch.randn(W) * 0.1  # fmt: skip
    s[DEC + "dec_time_embedder.mlp.2.weight"], s[DEC + "dec_time_embedder.mlp.2.bias"] = torch.randn(W, W) / W**0.5, torch.randn(W) * 0.1  # fmt: skip
    s[DEC + "dec_to_patches.adaLN_modulation.1.weight"], s[DEC + "dec_to_patches.adaLN_modulation.1.bias"] = torch.randn(2 * W, W) * 0.1, torch.randn(2 * W) * 0.1  # fmt: skip
    s[DEC + "dec_to_patches.proj.weight"], s[DEC + "dec_to_patches.proj.bias"] = torch.randn(p2c, W) / W**0.5, torch.randn(p2c) * 0.1  # fmt: skip
    return s


CONFIG = {
    "vae": {"latent_channels": C, "scaling_factor": SCALE, "norm_num_groups": 4},
    "regularizer": {"levels": LEVELS},
    "encoder": {"module_dict": {"enc_transformer": {"head_dim": HD}}},
    "decoder": {"module_dict": {"dec_transformer": {"head_dim": HD}, "dec_time_embedder": {"max_timestep": 1.0}}},
}


@pytest.fixture(scope="module")
def flextok_file(tmp_path_factory):
    import json

    state = flextok_state()
    d = tmp_path_factory.mktemp("flextok")
    save_file(state, str(d / "model.safetensors"), metadata={"vae": str(CONFIG["vae"])})
    (d / "config.json").write_text(json.dumps(CONFIG))
    return state, d


# ---- FlexTok's forward, from the source state dict -------------------------------------------------------------


def _ln(x):
    return F.layer_norm(x, x.shape[-1:])


def _attn(s, p, x, allowed):
    """Softmax attention with QK-norm, scale 8/head_dim; allowed: (S, S) bool or None."""
    b, n, _ = x.shape
    q, k, v = (F.linear(x, s[f"{p}.attn.{m}.weight"]).view(b, n, W // HD, HD).transpose(1, 2) for m in ("wq", "wk", "wv"))  # fmt: skip
    scores = _ln(q) @ _ln(k).transpose(-1, -2) * (8.0 / HD)
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, W)
    return F.linear(out, s[f"{p}.attn.proj.weight"])


def _mlp(s, p, x):
    return F.linear(F.silu(F.linear(x, s[f"{p}.mlp.fc1.weight"])) * F.linear(x, s[f"{p}.mlp.fc3.weight"]), s[f"{p}.mlp.fc2.weight"])  # fmt: skip


def _patches(s, key, lat):
    """(B, C, h, w) -> (B, h/2 * w/2, W): channels last, 2x2 patches (row, col, channel), linear, + table."""
    b, c, h, w = lat.shape
    x = (
        lat.permute(0, 2, 3, 1)
        .reshape(b, h // 2, 2, w // 2, 2, c)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(b, h // 2, w // 2, 4 * c)
    )
    x = F.linear(x, s[f"{key}.patch_proj.weight"], s[f"{key}.patch_proj.bias"])
    return x, (h // 2, w // 2)


def ref_ids(s, images):
    vae = _vae()
    vae.load_state_dict({k[8:]: v for k, v in s.items() if k.startswith("vae.vae.")})
    lat = vae.encode(images).latent_dist.mean * SCALE
    x, (gh, gw) = _patches(s, ENC + "enc_patch_emb", lat)
    x = (x + s[ENC + "enc_posemb_module.posembs"][0, :, :gh, :gw].permute(1, 2, 0)).reshape(len(images), -1, W)
    P = x.shape[1]
    x = torch.cat([x, s[ENC + "enc_register_module.registers"].expand(len(images), -1, -1)], 1)
    allowed = torch.zeros(P + N, P + N, dtype=torch.bool)
    for q in range(P + N):
        for kv in range(P + N):
            allowed[q, kv] = kv < P or (q >= P and kv <= q)  # prefix visible to all; registers causal
    for i in range(DEPTH):
        p = f"{ENC}enc_transformer.blocks.{i}"
        x = x + _attn(s, p, _ln(x), allowed)
        x = x + _mlp(s, p, _ln(x))
    z = F.linear(_ln(x[:, P:]), s[ENC + "enc_to_latents.proj.weight"], s[ENC + "enc_to_latents.proj.bias"])
    levels = torch.tensor(LEVELS)
    half = (levels - 1) * (1 + 1e-3) / 2
    offset = (levels % 2 == 0).float() * 0.5
    rounded = ((z + (offset / half).atanh()).tanh() * half - offset).round()  # integers centred on 0
    digits = rounded + levels // 2
    basis = torch.tensor([1, LEVELS[0], LEVELS[0] * LEVELS[1]])
    return (digits * basis).sum(-1).long()  # (B, N)


def _velocity(s, x_t, t, regs):
    b = len(x_t)
    h, (gh, gw) = _patches(s, DEC + "dec_noise_patch_emb", x_t)
    h = (h + s[DEC + "dec_patches_posemb_module.posembs"][0, :, :gh, :gw].permute(1, 2, 0)).reshape(b, -1, W)
    P = h.shape[1]
    h = torch.cat([h, regs], 1)
    half = 8
    freqs = 1000.0 * torch.exp(-math.log(256) * torch.arange(half) / half)
    tf = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], -1)
    temb = F.linear(F.silu(F.linear(tf, s[DEC + "dec_time_embedder.mlp.0.weight"], s[DEC + "dec_time_embedder.mlp.0.bias"])), s[DEC + "dec_time_embedder.mlp.2.weight"], s[DEC + "dec_time_embedder.mlp.2.bias"])  # fmt: skip
    for i in range(DEPTH):
        p = f"{DEC}dec_transformer.blocks.{i}"
        m = F.linear(F.silu(temb), s[f"{p}.adaLN_modulation.1.weight"], s[f"{p}.adaLN_modulation.1.bias"])
        m_patch, m_reg = m[:, : 6 * W], m[:, 6 * W :]  # set 0 for the patches, set 1 for the registers
        mod = torch.cat([m_patch[:, None].expand(-1, P, -1), m_reg[:, None].expand(-1, regs.shape[1], -1)], 1)
        ga, gm, sa, ca, sm, cm = mod.chunk(6, -1)
        h = h + ga * _attn(s, p, _ln(h) * (1 + ca) + sa, None)
        h = h + gm * _mlp(s, p, _ln(h) * (1 + cm) + sm)
    shift, scale = F.linear(F.silu(temb), s[DEC + "dec_to_patches.adaLN_modulation.1.weight"], s[DEC + "dec_to_patches.adaLN_modulation.1.bias"]).chunk(2, -1)  # fmt: skip
    out = F.linear(_ln(h[:, :P]) * (1 + scale[:, None]) + shift[:, None], s[DEC + "dec_to_patches.proj.weight"], s[DEC + "dec_to_patches.proj.bias"])  # fmt: skip
    return out.reshape(b, gh, gw, 2, 2, C).permute(0, 5, 1, 3, 2, 4).reshape(b, C, 2 * gh, 2 * gw)


def ref_decode(s, ids, keep, steps, guidance, apg, single=False):
    levels = torch.tensor(LEVELS)
    basis = torch.tensor([1, LEVELS[0], LEVELS[0] * LEVELS[1]])
    codes = ((ids[..., None] // basis) % levels - levels // 2) / (levels // 2)  # (B, N, 3)
    regs = F.linear(codes, s[DEC + "dec_from_latents.proj.weight"], s[DEC + "dec_from_latents.proj.bias"])
    regs = regs + s[DEC + "dec_registers_posemb_module.posembs"][0, 0].T
    for b, k in enumerate(keep):
        regs[b, k:] = s[DEC + "dec_nested_dropout.dropout_mask_token"]
    null = s[DEC + "dec_latent_dropout.nullcond"].expand(len(regs), 1 if single else N, -1)  # LearnedNullCond
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(1, C, SIZE // 2, SIZE // 2, generator=g) for _ in keep])
    running = torch.zeros_like(x)
    for i in range(steps, 0, -1):
        t = torch.full((len(x),), i / steps)
        v = _velocity(s, x, t, regs)
        if guidance != 1:
            u = _velocity(s, x, t, null)
            if apg:
                running = (v - u) + (-0.5) * running
                d = running * torch.clamp(2.5 / running.flatten(1).norm(dim=1), max=1.0)[:, None, None, None]
                unit = v.double() / v.double().flatten(1).norm(dim=1)[:, None, None, None]
                par = (d.double() * unit).flatten(1).sum(1)[:, None, None, None] * unit
                v = v + (guidance - 1) * (d.double() - par).float()
            else:
                v = u + guidance * (v - u)
        x = x - v / steps
    vae = _vae()
    vae.load_state_dict({k[8:]: v for k, v in s.items() if k.startswith("vae.vae.")})
    return vae.decode(x / SCALE).sample


# ---- tests ------------------------------------------------------------------------------------------------------


def test_flextok_matches_the_published_forward(flextok_file, tmp_path):
    state, d = flextok_file
    model = convert("flextok", d / "model.safetensors", tmp_path / "out", config=d / "config.json")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(state, x)
        assert tokens.ids.shape == (2, N, 1) and torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 4  # not one code everywhere
        dec = model.decoder
        cases = [([N, N], 3, 3.0, True, False), ([2, 5], 2, 2.5, False, False), ([N, 3], 2, 1.0, False, False),
                 ([4, N], 2, 2.0, True, True)]  # fmt: skip
        for keep, steps, guidance, apg, single in cases:
            dec.cfg.steps, dec.cfg.guidance_scale, dec.cfg.norm_guidance = steps, guidance, apg
            dec.cfg.null_single_token = single
            got = model.decode(tokens.prefix(torch.tensor(keep)))
            ref = ref_decode(state, want, keep, steps, guidance, apg, single)
            assert ref.abs().mean() > 0.05
            torch.testing.assert_close(got, ref.clamp(-1, 1), atol=1e-5, rtol=1e-5)


def test_flextok_config_is_read_from_the_weights_and_config(flextok_file, tmp_path):
    _, d = flextok_file
    model = convert("flextok", d / "model.safetensors", config=d / "config.json")
    enc, dec = model.encoder.cfg, model.decoder.cfg
    assert (enc.width, enc.depth, enc.head_dim, enc.patch_size, enc.num_latent_tokens) == (W, DEPTH, HD, 2, N)
    assert (dec.modulation_sets, dec.time_features, dec.max_timestep, dec.image_size) == (2, 16, 1.0, SIZE)
    assert model.quantizer.cfg.levels == LEVELS and enc.block_out_channels == VAE_CH and enc.scaling_factor == SCALE


def test_flextok_and_other_files_are_told_apart(flextok_file, tmp_path, capsys):
    state, d = flextok_file
    args = ["convert", "--from", "rq-vae", str(d / "model.safetensors"), "--out", str(tmp_path / "a")]
    assert main(args) == 2
    assert "look like flextok" in capsys.readouterr().err
    torch.save({"quantizer.codebooks.0.weight": torch.randn(4, 2)}, tmp_path / "rq.pt")
    assert main(["convert", "--from", "flextok", str(tmp_path / "rq.pt"), "--out", str(tmp_path / "b")]) == 2
    assert "look like rq-vae" in capsys.readouterr().err


def test_flextok_bad_keys_and_config_are_named(flextok_file, tmp_path, capsys):
    state, d = flextok_file
    missing = {k: v for k, v in state.items() if k != DEC + "dec_latent_dropout.nullcond"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    args = ["convert", "--from", "flextok", str(tmp_path / "missing.safetensors"), "--config", str(d / "config.json")]
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "null_token" in capsys.readouterr().err
    save_file({**state, DEC + "dec_extra.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    args = ["convert", "--from", "flextok", str(tmp_path / "extra.safetensors"), "--config", str(d / "config.json")]
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    assert "dec_extra.weight" in capsys.readouterr().err
    (tmp_path / "noscale.json").write_text('{"vae": {}}')
    args = ["convert", "--from", "flextok", str(d / "model.safetensors"), "--config", str(tmp_path / "noscale.json")]
    assert main([*args, "--out", str(tmp_path / "c")]) == 2
    assert "scaling_factor" in capsys.readouterr().err
