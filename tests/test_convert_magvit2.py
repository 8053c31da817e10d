"""Open-MAGVIT2: a synthetic checkpoint in the published Lightning layout gives Open-MAGVIT2's ids and pixels.

The reference recomputes Open-MAGVIT2's published forward with torch's functional ops
straight from the source state dict: the bias-free residual CNN with symmetric stride-2
downsampling, the sign quantizer with its least-significant-bit-first factorised
indices, and the decoder with adaptive group norm (unbiased spread of the latents) and
conv + depth-to-space (DCR) upsampling. Weights are the EMA copies when the file has
them (as its evaluation), the raw ones when the config says ``use_ema: False`` (as its AR
configs). Released-size check against Open-MAGVIT2's own
code: README.md, "Public checkpoints".
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vtok
from vtok.cli import main
from vtok.convert import convert

CH, MULT, BLOCKS, BITS = 32, [1, 2], 1, 8  # a 2-level CNN (f2), 8-bit codes as 2 sub-codes of 4


def _conv(s, name, cin, cout, k, bias=True):
    s[f"{name}.weight"] = torch.randn(cout, cin, k, k) / (cin * k * k) ** 0.5
    if bias:
        s[f"{name}.bias"] = torch.randn(cout) * 0.05


def _norm(s, name, c):
    s[f"{name}.weight"] = 1 + 0.1 * torch.randn(c)
    s[f"{name}.bias"] = 0.1 * torch.randn(c)


def _res(s, name, cin, cout):
    _norm(s, f"{name}.norm1", cin), _conv(s, f"{name}.conv1", cin, cout, 3, bias=False)
    _norm(s, f"{name}.norm2", cout), _conv(s, f"{name}.conv2", cout, cout, 3, bias=False)
    if cin != cout:
        _conv(s, f"{name}.nin_shortcut", cin, cout, 1, bias=False)


def magvit2_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Open-MAGVIT2's VQModel key layout (improved_model.py, lfqgan.py) at a tiny size, random values."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    top = CH * MULT[-1]
    _conv(s, "encoder.conv_in", 3, CH, 3, bias=False)
    cin = CH
    for i, m in enumerate(MULT):
        for j in range(BLOCKS):
            _res(s, f"encoder.down.{i}.block.{j}", cin, CH * m)
            cin = CH * m
        if i != len(MULT) - 1:
            _conv(s, f"encoder.down.{i}.downsample", cin, cin, 3)
    for side in ("encoder", "decoder"):
        for j in range(BLOCKS):
            _res(s, f"{side}.mid_block.{j}", top, top)
    _norm(s, "encoder.norm_out", top), _conv(s, "encoder.conv_out", top, BITS, 1)
    _conv(s, "decoder.conv_in", BITS, top, 3)
    cin = top
    for i in reversed(range(len(MULT))):
        s[f"decoder.adaptive.{i}.gamma.weight"] = torch.randn(cin, BITS) * 0.3
        s[f"decoder.adaptive.{i}.gamma.bias"] = 1 + 0.1 * torch.randn(cin)
        s[f"decoder.adaptive.{i}.beta.weight"] = torch.randn(cin, BITS) * 0.3
        s[f"decoder.adaptive.{i}.beta.bias"] = 0.1 * torch.randn(cin)
        for j in range(BLOCKS):
            _res(s, f"decoder.up.{i}.block.{j}", cin, CH * MULT[i])
            cin = CH * MULT[i]
        if i != 0:
            _conv(s, f"decoder.up.{i}.upsample.conv1", cin, 4 * cin, 3)
    _norm(s, "decoder.norm_out", CH), _conv(s, "decoder.conv_out", CH, 3, 3)
    return s


def lightning_file(path, ema: bool) -> dict[str, torch.Tensor]:
    """The state as Lightning saves it: loss weights beside, and (``ema``) LitEma's dotless copies, other values."""
    s = magvit2_state()
    s["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    if ema:
        torch.manual_seed(1)
        shadow = {k: v + 0.05 * torch.randn_like(v) for k, v in s.items()}
        s |= {f"model_ema.{k.replace('.', '')}": v for k, v in shadow.items()}
        s["model_ema.decay"], s["model_ema.num_updates"] = torch.tensor(0.999), torch.tensor(-1, dtype=torch.int)
    torch.save({"state_dict": s, "epoch": 3}, path)
    return {
        k: (s[f"model_ema.{k.replace('.', '')}"] if ema else v) for k, v in s.items() if not k.startswith("model_ema.")
    }


# --- Open-MAGVIT2's forward, recomputed -----------------------------------------------------


def _c(x, s, name, **kw):
    w = s[f"{name}.weight"]
    return F.conv2d(x, w, s.get(f"{name}.bias"), padding=w.shape[-1] // 2, **kw)


def _gn(x, s, name):
    return F.group_norm(x, 32, s[f"{name}.weight"], s[f"{name}.bias"], eps=1e-6)


def _block(x, s, name):
    h = _c(F.silu(_gn(x, s, f"{name}.norm1")), s, f"{name}.conv1")
    h = _c(F.silu(_gn(h, s, f"{name}.norm2")), s, f"{name}.conv2")
    return h + (_c(x, s, f"{name}.nin_shortcut") if f"{name}.nin_shortcut.weight" in s else x)


def ref_latents(s, x):
    h = _c(x, s, "encoder.conv_in")
    for i in range(len(MULT)):
        for j in range(BLOCKS):
            h = _block(h, s, f"encoder.down.{i}.block.{j}")
        if i != len(MULT) - 1:
            h = _c(h, s, f"encoder.down.{i}.downsample", stride=2)  # padding 1 on every side
    for j in range(BLOCKS):
        h = _block(h, s, f"encoder.mid_block.{j}")
    return _c(F.silu(_gn(h, s, "encoder.norm_out")), s, "encoder.conv_out")


def ref_ids(s, x, split=(BITS // 2, BITS // 2)):
    """(B, h*w, 2): the factorised indices, channel k of a sub-code weighing 2^k."""
    bits = (ref_latents(s, x) > 0).long().flatten(2).transpose(1, 2)  # (B, hw, BITS)
    pre, post = bits[..., : split[0]], bits[..., split[0] :]
    return torch.stack([(pre * 2 ** torch.arange(split[0])).sum(-1), (post * 2 ** torch.arange(split[1])).sum(-1)], -1)


def _adaptive(h, z, s, name):
    flat = z.flatten(2)
    scale = F.linear((flat.var(-1, unbiased=True) + 1e-6).sqrt(), s[f"{name}.gamma.weight"], s[f"{name}.gamma.bias"])
    shift = F.linear(flat.mean(-1), s[f"{name}.beta.weight"], s[f"{name}.beta.bias"])
    return scale[..., None, None] * F.group_norm(h, 32, eps=1e-6) + shift[..., None, None]


def _depth_to_space(x):
    b, c, h, w = x.shape
    x = x.view(b, 2, 2, c // 4, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, c // 4, h * 2, w * 2)


def ref_decode(s, ids, grid, split=(BITS // 2, BITS // 2)):
    bits = torch.cat([(ids[..., g, None] & 2 ** torch.arange(split[g])) != 0 for g in range(2)], -1)  # (B, hw, BITS)
    z = (bits.float() * 2 - 1).transpose(1, 2).reshape(ids.shape[0], BITS, *grid)
    h = _c(z, s, "decoder.conv_in")
    for j in range(BLOCKS):
        h = _block(h, s, f"decoder.mid_block.{j}")
    for i in reversed(range(len(MULT))):
        h = _adaptive(h, z, s, f"decoder.adaptive.{i}")
        for j in range(BLOCKS):
            h = _block(h, s, f"decoder.up.{i}.block.{j}")
        if i != 0:
            h = _depth_to_space(_c(h, s, f"decoder.up.{i}.upsample.conv1"))
    return _c(F.silu(_gn(h, s, "decoder.norm_out")), s, "decoder.conv_out").clamp(-1, 1)


@pytest.mark.parametrize("ema", [True, False], ids=["ema", "raw"])
def test_open_magvit2_matches_the_published_forward(tmp_path, ema):
    used = lightning_file(tmp_path / "imagenet_256_L.ckpt", ema)
    model = convert("open-magvit2", tmp_path / "imagenet_256_L.ckpt", tmp_path / "out")
    assert model.spec["quantizer"]["bits"] == BITS and model.codebook_sizes == (16, 16)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        want = ref_ids(used, x)
        assert tokens.grid == (4, 4) and torch.equal(tokens.ids, want)
        assert len((want[..., 0] * 16 + want[..., 1]).unique()) > 8  # not one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_decode(used, want, (4, 4)), atol=1e-5, rtol=1e-5)
        assert torch.equal(model(x).tokens.ids, want)  # the training pass (the library's LFQ) gives the same ids


def test_the_ar_models_asymmetric_split_comes_from_their_config(tmp_path):
    """factorized_bits from an Open-MAGVIT2 config (nested as in its AR YAML) gives unequal sub-codes that are
    its indices for that split; the pixels do not change."""
    used = lightning_file(tmp_path / "omv2.ckpt", ema=True)
    (tmp_path / "ar.yaml").write_text("model:\n  init_args:\n    transformer_config:\n      params:\n"
                                      "        factorized_bits: [3, 5]\n")  # fmt: skip
    model = convert("open-magvit2", tmp_path / "omv2.ckpt", tmp_path / "out", config=tmp_path / "ar.yaml")
    assert model.codebook_sizes == (8, 32)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        assert torch.equal(tokens.ids, ref_ids(used, x, (3, 5)))
        want = ref_decode(used, tokens.ids, (4, 4), (3, 5))
        torch.testing.assert_close(model.decode(tokens), want, atol=1e-5, rtol=1e-5)
    (tmp_path / "bad.yaml").write_text("factorized_bits: [3, 3]\n")
    with pytest.raises(vtok.VtokError, match="do not sum"):
        convert("open-magvit2", tmp_path / "omv2.ckpt", tmp_path / "out2", config=tmp_path / "bad.yaml")


def test_open_magvit2_and_taming_files_are_told_apart(tmp_path, capsys):
    lightning_file(tmp_path / "omv2.ckpt", ema=False)
    assert main(["convert", "--from", "taming-vqgan", str(tmp_path / "omv2.ckpt"), "--out", str(tmp_path / "a")]) == 2
    assert "look like open-magvit2 (try --from open-magvit2)" in capsys.readouterr().err
    assert main(["convert", "--from", "llamagen-vq", str(tmp_path / "omv2.ckpt"), "--out", str(tmp_path / "b")]) == 2
    assert "try --from open-magvit2" in capsys.readouterr().err
    broken = magvit2_state()
    del broken["decoder.adaptive.0.beta.bias"]
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    assert main(["convert", "--from", "open-magvit2", str(tmp_path / "broken.ckpt"), "--out", str(tmp_path / "c")]) == 2
    assert "decoder.adaptive.0.beta.bias" in capsys.readouterr().err


def test_magvit2_widths_must_fit_group_norm():
    with pytest.raises(vtok.VtokError, match="multiples of 32"):
        vtok.build("configs/tokenizer/vq_magvit2_tiny.yaml", ["model.decoder.ch=40"])


def test_messages_name_an_open_magvit2_checkpoint_with_its_article(tmp_path, capsys):
    from .test_convert import taming_state

    torch.save({"state_dict": taming_state()}, tmp_path / "taming.ckpt")
    assert main(["convert", "--from", "open-magvit2", str(tmp_path / "taming.ckpt"), "--out", str(tmp_path / "a")]) == 2
    assert "is not an open-magvit2 checkpoint: its keys look like taming-vqgan" in capsys.readouterr().err
    broken = {k: v for k, v in magvit2_state().items() if k != "encoder.conv_in.weight"}
    torch.save({"state_dict": broken}, tmp_path / "broken.ckpt")
    assert main(["convert", "--from", "open-magvit2", str(tmp_path / "broken.ckpt"), "--out", str(tmp_path / "b")]) == 2
    assert "is not an open-magvit2 checkpoint: key 'encoder.conv_in.weight' is missing" in capsys.readouterr().err


def _ar_config(path, use_ema: bool | None):
    """Open-MAGVIT2's AR YAML shape: the tokenizer's options nested under first_stage_config.params."""
    line = "" if use_ema is None else f"        use_ema: {use_ema}\n"
    path.write_text("model:\n  init_args:\n    first_stage_config:\n      params:\n" + line)
    return path


@pytest.mark.parametrize("use_ema", [True, False, None], ids=["tokenizer-config", "ar-config", "no-key"])
def test_use_ema_in_the_config_chooses_the_weights_and_is_recorded(tmp_path, use_ema):
    """The AR configs' use_ema: False converts the raw weights (the tokens their AR models saw), the tokenizer
    configs' True the EMA copies (also the default); the choice is in config.json's source."""
    import json

    ema_used = lightning_file(tmp_path / "omv2.ckpt", ema=True)
    raw_used = magvit2_state()
    cfg = _ar_config(tmp_path / "ar.yaml", use_ema)
    model = convert("open-magvit2", tmp_path / "omv2.ckpt", tmp_path / "out", config=cfg)
    used, want_ema = (raw_used, False) if use_ema is False else (ema_used, True)
    assert not torch.equal(ema_used["encoder.conv_in.weight"], raw_used["encoder.conv_in.weight"])
    for name in ("encoder.conv_in.weight", "decoder.adaptive.0.gamma.weight", "decoder.conv_out.bias"):
        assert torch.equal(model.state_dict()[name], used[name])
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model.encode(x).ids, ref_ids(used, x))
    assert model.source["use_ema"] is want_ema
    assert json.loads((tmp_path / "out" / "config.json").read_text())["source"]["use_ema"] is want_ema


def test_use_ema_without_ema_weights_or_not_a_bool_is_one_line(tmp_path, capsys):
    lightning_file(tmp_path / "raw.ckpt", ema=False)
    model = convert("open-magvit2", tmp_path / "raw.ckpt", tmp_path / "a")
    assert model.source["use_ema"] is False  # a file without EMA copies: its raw weights, recorded as such
    cfg = _ar_config(tmp_path / "ema.yaml", True)
    args = ["convert", "--from", "open-magvit2", str(tmp_path / "raw.ckpt"), "--out", str(tmp_path / "b")]
    assert main([*args, "--config", str(cfg)]) == 2
    assert "use_ema: true but the checkpoint holds no EMA weights" in capsys.readouterr().err
    (tmp_path / "odd.yaml").write_text("use_ema: sometimes\n")
    assert main([*args, "--config", str(tmp_path / "odd.yaml")]) == 2
    assert "use_ema in the config must be true or false" in capsys.readouterr().err
