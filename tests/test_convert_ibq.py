"""IBQ: a synthetic checkpoint in SEED-Voken's Lightning layout gives IBQ's ids, pixels and training gradients.

The reference recomputes IBQ's published forward with torch's functional ops straight from
the source state dict: taming's CNN (attention at the lowest resolution, asymmetric
padding before each stride-2 convolution, nearest upsampling), 1x1 quant convs, and the
index-backpropagation quantizer: logits ``z . e`` over every code (no normalisation), the
id is the largest softmax probability, the decoder gets ``(onehot - sg(softmax) + softmax)
@ E``. Its quantization and entropy losses and the gradient they send to every code are
recomputed too. Weights are the EMA copies (what the released configs evaluate and their
AR models load), or the raw ones when the config says ``use_ema: false``. Released-size
check against SEED-Voken's own code: /work/ref/ibq/RESULT.txt.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.taming_cnn import conv, decoder, encoder, randcnn, randconv
from vtok.cli import main
from vtok.config import build_component
from vtok.convert import convert

CH, MULT, BLOCKS, Z, D, K = 32, [1, 2], 1, 32, 8, 32  # a 2-level CNN (f2), 32 latent channels, 32 codes of dim 8


def ibq_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """The generator's keys of SEED-Voken's IBQ (src/IBQ/models/ibqgan.py) at a tiny size, random values."""
    torch.manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    randcnn(s, CH, MULT, BLOCKS, Z)
    randconv(s, "quant_conv", Z, D, 1), randconv(s, "post_quant_conv", D, Z, 1)
    s["quantize.embedding.weight"] = torch.randn(K, D)  # nn.Embedding's N(0, 1): codes of varied norms
    return s


def lightning_file(path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Saved as Lightning does, with a loss and LitEma's dotless copies of every parameter: (raw, EMA) weights."""
    raw = ibq_state()
    s = dict(raw)
    s["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4)
    torch.manual_seed(1)
    ema = {k: v + 0.05 * torch.randn_like(v) for k, v in s.items()}
    s |= {f"model_ema.{k.replace('.', '')}": v for k, v in ema.items()}
    s["model_ema.decay"], s["model_ema.num_updates"] = torch.tensor(0.999), torch.tensor(-1, dtype=torch.int)
    torch.save({"state_dict": s, "epoch": 329}, path)
    return raw, ema


# --- IBQ's forward, recomputed ----------------------------------------------------------------------


def ref_latents(s, x):
    """(B, D, h, w): encoder then quant_conv."""
    return conv(encoder(x, s, MULT, BLOCKS), s, "quant_conv")


def ref_quantize(z, codes, beta=0.25):
    """IndexPropagationQuantize: (B, D, h, w) -> z_q (B, D, h, w), ids (B, h*w), quant loss, logits (N, K)."""
    logits = torch.einsum("bdhw,nd->bnhw", z, codes)
    soft = logits.softmax(1)
    ind = soft.argmax(1, keepdim=True)
    hard = torch.zeros_like(logits).scatter_(1, ind, 1.0)
    z_q = torch.einsum("bnhw,nd->bdhw", hard - soft.detach() + soft, codes)
    z_q2 = torch.einsum("bnhw,nd->bdhw", hard, codes)
    loss = ((z_q - z) ** 2).mean() + ((z_q2.detach() - z) ** 2).mean() + beta * ((z_q2 - z.detach()) ** 2).mean()
    return z_q, ind.flatten(1), loss, logits.permute(0, 2, 3, 1).reshape(-1, codes.shape[0])


def ref_entropy(logits, temperature=0.01):
    """MAGVIT's entropy loss as IBQ computes it: mean sample entropy - entropy of the mean probabilities."""
    probs = F.softmax(logits / temperature, -1)
    sample = -(probs * F.log_softmax(logits / temperature + 1e-5, -1)).sum(-1).mean()
    avg = probs.mean(0)
    return sample + (avg * torch.log(avg + 1e-5)).sum()


def ref_decode(s, ids, grid):
    z = s["quantize.embedding.weight"][ids].transpose(1, 2).reshape(ids.shape[0], D, *grid)
    return decoder(conv(z, s, "post_quant_conv"), s, MULT, BLOCKS)


@pytest.mark.parametrize("use_ema", [None, True, False], ids=["default", "ema", "raw"])
def test_ibq_matches_the_published_forward(tmp_path, use_ema):
    raw, ema = lightning_file(tmp_path / "imagenet256_16384.ckpt")
    config = None
    if use_ema is not None:
        config = tmp_path / "ibq.yaml"
        config.write_text(f"model:\n  init_args:\n    use_ema: {use_ema}\n")
    model = convert("ibq", tmp_path / "imagenet256_16384.ckpt", tmp_path / "out", config=config)
    used = raw if use_ema is False else ema
    assert model.codebook_sizes == (K,) and model.spec["quantizer"]["name"] == "ibq"
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        tokens = model.encode(x)
        _, want, _, _ = ref_quantize(ref_latents(used, x), used["quantize.embedding.weight"])
        assert tokens.grid == (4, 4) and torch.equal(tokens.ids[..., 0], want)
        assert len(want.unique()) > 8  # not one code everywhere
        torch.testing.assert_close(model.decode(tokens), ref_decode(used, want, (4, 4)), atol=1e-5, rtol=1e-5)
        assert torch.equal(model(x).tokens.ids, tokens.ids)  # the training pass's ids too
    recorded = json.loads((tmp_path / "out" / "config.json").read_text())["source"]
    assert recorded["family"] == "ibq" and recorded["use_ema"] is (use_ema is not False)


def test_the_ibq_quantizer_trains_every_code_as_published():
    """Losses and the gradients to the codes and the latents equal IBQ's straight-through of the one-hot index."""
    torch.manual_seed(3)
    q = build_component("quantizer", {"name": "ibq", "dim": D, "codebook_size": K, "entropy_weight": 0.05})
    q.train()
    z = (torch.randn(2, D, 4, 4) * 2).requires_grad_()
    codes = q.embedding.weight.detach().clone().requires_grad_()
    g = torch.randn(2, D, 4, 4)  # a downstream gradient on z_q
    z_q, ids, quant, logits = ref_quantize(z, codes)
    entropy = ref_entropy(logits)
    ((z_q * g).sum() + quant + 0.05 * entropy).backward()
    zv = z.detach().flatten(2).transpose(1, 2).requires_grad_()  # (B, L, D)
    out = q(zv)
    assert torch.equal(out.ids[..., 0], ids)
    torch.testing.assert_close(out.z_q, z_q.detach().flatten(2).transpose(1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.losses["quant"] + out.losses["commit"] + out.losses["codebook"], quant.detach())
    torch.testing.assert_close(out.losses["entropy"], 0.05 * entropy.detach())
    total = (out.z_q * g.flatten(2).transpose(1, 2)).sum() + sum(out.losses.values())
    total.backward()
    torch.testing.assert_close(q.embedding.weight.grad, codes.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(zv.grad, z.grad.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-4)
    assert (q.embedding.weight.grad.abs().sum(-1) > 0).all()  # every code moves, chosen or not


def test_ibq_and_taming_files_are_told_apart(tmp_path, capsys):
    from .test_convert import taming_state

    lightning_file(tmp_path / "ibq.ckpt")
    args = ["convert", "--from", "taming-vqgan", str(tmp_path / "ibq.ckpt"), "--out", str(tmp_path / "a")]
    assert main(args) == 2
    assert "look like ibq (try --from ibq)" in capsys.readouterr().err
    torch.save({"state_dict": taming_state()}, tmp_path / "taming.ckpt")
    assert main(["convert", "--from", "ibq", str(tmp_path / "taming.ckpt"), "--out", str(tmp_path / "b")]) == 2
    assert "is not an ibq checkpoint: its keys look like taming-vqgan" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["missing", "extra"])
def test_missing_or_extra_keys_are_named(tmp_path, capsys, change):
    lightning_file(tmp_path / "ibq.ckpt")
    state = torch.load(tmp_path / "ibq.ckpt")["state_dict"]
    if change == "missing":
        del state["model_ema.decoderconv_outbias"]
        name = "model_ema.decoderconv_outbias"
    else:
        state["quant_conv.scale"] = torch.ones(D)
        state["model_ema.quant_convscale"] = torch.ones(D)
        name = "quant_conv.scale"
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    assert main(["convert", "--from", "ibq", str(tmp_path / "bad.ckpt"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert name in err and err.count("\n") == 1
