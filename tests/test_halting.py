"""Single-pass adaptive length (KARL's halting head): trained by ``vtok train``, answers targets, saves, refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.cli import main
from vtok.eval.adaptive import encode_adaptive, encode_single_pass
from vtok.eval.heldout import crops
from vtok.eval.psnr import psnr_per_image
from vtok.tokens import load_tokens

ROOT = Path(__file__).resolve().parent.parent
PRESET = ROOT / "configs" / "tokenizer" / "oned_halting_tiny.yaml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The tiny preset trained with its head, jointly, by the tokenizer trainer (about 3 s on 2 cores)."""
    from vtok.tokenizers.train import train_tokenizer

    run = tmp_path_factory.mktemp("halting") / "run"
    steps = ["train.steps=150", "train.batch_size=8", "train.log_every=50", "train.save_every=150"]
    cfg = vtok.load_config(PRESET, [*steps, "train.ema_decay=null", "train.lr=3.0e-3"])
    torch.manual_seed(0)
    return train_tokenizer(cfg, run, progress=False)


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    return crops("heldout", 32)[:24]


@pytest.mark.slow
def test_the_trained_head_asks_more_tokens_for_a_higher_target(trained, held_out):
    tok = vtok.load(trained).eval()
    n = tok.num_tokens
    with torch.no_grad():
        first = psnr_per_image(held_out, tok.decode(tok.encode(held_out, num_tokens=1)))
        full = psnr_per_image(held_out, tok.decode(tok.encode(held_out)))
        # Below what one token reaches for any image, then halfway between the medians of 1 and N tokens: the
        # easy target asks (almost) one token, the higher one more by N / 4 at least. (Far above what N tokens
        # reach on its training crops, this briefly trained head extrapolates badly: not asked here.)
        targets = [float(first.min()) - 1, float((first.median() + full.median()) / 2)]
        means = [
            float(encode_single_pass(tok, held_out, f"psnr={t:.2f}").tokens.lengths.float().mean()) for t in targets
        ]
    assert means == sorted(means) and means[0] <= 2 and means[-1] >= means[0] + n / 4, (targets, means)


@pytest.mark.slow
def test_the_head_is_saved_and_loaded_with_the_tokenizer(trained, held_out, tmp_path):
    tok = vtok.load(trained).eval()
    assert tok.spec["halting"]["name"] == "karl" and tok.spec["halting"]["in_channels"] is not None
    tok.save_pretrained(tmp_path / "again")
    again = vtok.load(tmp_path / "again").eval()
    for (name, a), (_, b) in zip(tok.halting.state_dict().items(), again.halting.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        one = encode_single_pass(tok, held_out, "psnr=15")
        two = encode_single_pass(again, held_out, "psnr=15")
    assert torch.equal(one.tokens.lengths, two.tokens.lengths) and torch.equal(one.tokens.ids, two.tokens.ids)
    # The head only chooses lengths: the ids are the tokenizer's own, and the search agrees on them.
    assert torch.equal(one.tokens.ids, tok.encode(held_out, num_tokens=one.tokens.lengths).ids)
    searched = encode_adaptive(tok, held_out, "psnr=15")
    assert searched.decodes > one.decodes == 1


@pytest.mark.slow
def test_vtok_encode_single_pass_writes_the_heads_lengths(trained, tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "photos" / f"{i}.png")
    out = tmp_path / "t.safetensors"
    argv = ["encode", "--tokenizer", str(trained), str(tmp_path / "photos"), "--size", "32", "--target", "psnr=12"]
    assert main([*argv, "--single-pass", "--out", str(out)]) in (0, None)
    tokens = load_tokens(out).tokens
    assert tokens.lengths is not None and len(tokens.lengths) == 3
    assert "met for" in capsys.readouterr().out


def test_halting_training_reaches_no_tokenizer_weight():
    torch.manual_seed(0)
    tok = vtok.build(PRESET).train()
    out = tok(torch.rand(2, 3, 32, 32) * 2 - 1)
    out.losses["halting"].backward()
    reached = sorted({n.split(".")[0] for n, p in tok.named_parameters() if p.grad is not None})
    assert reached == ["halting"]


def test_single_pass_refuses_a_tokenizer_without_a_head_and_a_target_of_another_metric():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    plain = vtok.build(ROOT / "configs" / "tokenizer" / "oned_tiny.yaml").eval()
    with pytest.raises(vtok.VtokError, match="no halting head|has none"):
        encode_single_pass(plain, x, "psnr=20")
    with pytest.raises(vtok.VtokError, match="no halting head"):
        plain.encode_to_quality(x, 20.0)
    headed = vtok.build(PRESET).eval()
    with pytest.raises(vtok.VtokError, match="answers psnr targets, not l1"):
        encode_single_pass(headed, x, "l1=0.05")
    l1 = vtok.build(PRESET, ["model.halting.name=karl_l1"]).eval()
    result = encode_single_pass(l1, x, "l1=0.05")  # KARL's own condition: an L1 error, lower is better
    assert result.tokens.lengths.shape == (2,) and result.scores.shape == (2,)
    with pytest.raises(vtok.VtokError, match="in_channels must be"):
        vtok.build(PRESET, ["model.halting.in_channels=3"])
