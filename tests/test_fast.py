"""Inference fast paths against float32 eager: bf16 autocast, torch.compile, channels_last, the static GPT step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vtok
from tests.test_quantizers import cases, check_float32_under_bf16_autocast
from vtok import fast
from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, generate
from vtok.builtin import builtin_crops
from vtok.cli import main
from vtok.images import pil_to_tensor
from vtok.pipeline import decode_batched, encode_batched

PRESETS = Path(__file__).resolve().parent.parent / "configs" / "tokenizer"
TINY = sorted(p.name for p in PRESETS.glob("*tiny*.yaml"))
needs_compile = pytest.mark.skipif(fast.compile_problem() is not None, reason=str(fast.compile_problem()))


def _crops(size: int, count: int = 12) -> torch.Tensor:
    x = torch.stack([pil_to_tensor(im) for _, im in builtin_crops("heldout", 64)[:count]])
    return x if size == 64 else torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True)


def _tiny(name: str) -> tuple[vtok.Tokenizer, torch.Tensor]:
    torch.manual_seed(0)
    return vtok.build(PRESETS / name).eval(), _crops(vtok.load_config(PRESETS / name)["data"]["image_size"])


@pytest.mark.parametrize("name,options", list(cases()))
def test_quantizers_stay_float32_under_bf16_autocast(name, options):
    """The same float32 latents give the same ids and codes with autocast on: bf16 never reaches the search."""
    check_float32_under_bf16_autocast(name, options)


@pytest.mark.parametrize("name", TINY)
def test_bf16_encode_decode_close_to_float32(name):
    """Random weights put many latents near a boundary between codes, so ids agree less often than on a trained
    model (98.3% on the trained VQ demo, benchmarks/RESULTS.md); the decoded pixels must stay close regardless."""
    tok, x = _tiny(name)
    want = encode_batched(tok, x, 8, progress=False)
    got = encode_batched(tok, x, 8, progress=False, precision="bf16")
    assert (got.ids == want.ids).float().mean() >= 0.85
    ref = decode_batched(tok, want, 8, progress=False)
    low = decode_batched(tok, want, 8, progress=False, precision="bf16")
    assert low.dtype == torch.float32
    assert (low - ref).abs().mean() < 0.02 and (low - ref).abs().max() < 0.25


@pytest.mark.parametrize("name", ["vq_tiny.yaml", "rq_tiny.yaml"])
def test_channels_last_is_exact(name):
    tok, x = _tiny(name)
    want = encode_batched(tok, x, 8, progress=False)
    ref = decode_batched(tok, want, 8, progress=False)
    fast.accelerate(tok, channels_last=True)
    assert next(tok.encoder.parameters()).is_contiguous(memory_format=torch.channels_last) or not any(
        p.ndim == 4 for p in tok.encoder.parameters()
    )
    got = encode_batched(tok, x, 8, progress=False)
    assert (got.ids == want.ids).float().mean() >= 0.995
    torch.testing.assert_close(decode_batched(tok, want, 8, progress=False), ref, atol=1e-4, rtol=1e-4)


@needs_compile
@pytest.mark.parametrize("name", ["vq_patch_tiny.yaml", "oned_tiny.yaml"])
def test_compiled_tokenizer_matches_eager(name, tmp_path):
    tok, x = _tiny(name)
    want = encode_batched(tok, x, 12, progress=False)
    ref = decode_batched(tok, want, 12, progress=False)
    fast.accelerate(tok, compile=True)
    got = encode_batched(tok, x, 12, progress=False)
    assert (got.ids == want.ids).float().mean() >= 0.995
    torch.testing.assert_close(decode_batched(tok, want, 12, progress=False), ref, atol=1e-4, rtol=1e-4)
    tok.save_pretrained(tmp_path / "m")  # compiling keeps the parameter names
    assert set(vtok.load(tmp_path / "m").state_dict()) == set(tok.state_dict())


def _gpt(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = dict(codebook_sizes=[48], grid=[4, 4], num_classes=4, dim=64, depth=2, heads=4)
    return GPT(GPT.Config(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("layout", [{}, {"codebook_sizes": [24, 24]}, {"grid": None, "length": 9, "end_token": True}])
def test_static_cached_step_equals_recomputing_the_prefix(layout):
    model = _gpt(**layout)
    labels = torch.tensor([0, 3, 1])
    s = dict(cfg_scale=2.0, top_k=8, seed=3)
    cached = generate(model, labels, sampling=SamplingConfig(**s))
    full = generate(model, labels, sampling=SamplingConfig(**s, use_cache=False))
    assert torch.equal(cached.ids, full.ids)


def test_bf16_sampling_stays_near_float32():
    """Greedy decoding in bf16 follows float32 for most tokens of a random model (ties aside)."""
    model = _gpt()
    labels = torch.arange(4)
    greedy = SamplingConfig(top_k=1)
    want = generate(model, labels, sampling=greedy).ids
    got = generate(model, labels, sampling=greedy, precision="bf16").ids
    assert (got[:, :4] == want[:, :4]).float().mean() >= 0.75


@needs_compile
def test_compiled_sampling_gives_the_same_tokens():
    model = _gpt()
    labels = torch.tensor([0, 1, 2, 3])
    s = SamplingConfig(cfg_scale=2.0, top_k=8, seed=1)
    assert torch.equal(generate(model, labels, sampling=s, compile=True).ids, generate(model, labels, sampling=s).ids)


def test_compile_without_the_cache_is_refused():
    with pytest.raises(vtok.VtokError, match="cache"):
        generate(_gpt(), torch.tensor([0]), sampling=SamplingConfig(use_cache=False), compile=True)


def test_cli_says_in_one_line_when_compile_is_unavailable(tmp_path, monkeypatch, capsys):
    tok, _ = _tiny("vq_tiny.yaml")
    tok.save_pretrained(tmp_path / "tok")
    monkeypatch.setattr(fast, "compile_problem", lambda: "torch.compile is unavailable here (no compiler)")
    image = tmp_path / "a.png"
    from vtok.images import save_image

    save_image(_crops(32, 1)[0], image)
    code = main(
        [
            "encode",
            str(image),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--out",
            str(tmp_path / "t.safetensors"),
            "--compile",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["vtok: error: torch.compile is unavailable here (no compiler)"]
    assert not (tmp_path / "t.safetensors").exists()


def test_cli_bf16_round_trip(tmp_path, capsys):
    tok, _ = _tiny("vq_tiny.yaml")
    tok.save_pretrained(tmp_path / "tok")
    from vtok.images import save_image

    save_image(_crops(32, 1)[0], tmp_path / "a.png")
    args = ["--tokenizer", str(tmp_path / "tok"), "--precision", "bf16", "--channels-last"]
    assert main(["encode", str(tmp_path / "a.png"), "--out", str(tmp_path / "t.safetensors"), *args]) == 0
    assert main(["decode", str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "png"), *args]) == 0
    assert len(list((tmp_path / "png").glob("*.png"))) == 1
    with pytest.raises(SystemExit) as exit_:
        main(
            ["decode", str(tmp_path / "t.safetensors"), "--out", str(tmp_path / "x"), "--precision", "fp16", *args[:2]]
        )
    assert exit_.value.code == 2 and "--precision" in capsys.readouterr().err


@needs_compile
def test_training_with_compile_saves_the_same_names(tmp_path):
    from vtok.tokenizers.train import train_tokenizer

    overrides = ["train.steps=2", "train.save_every=2", "train.compile=true", "loss.disc_start=1000"]
    final = train_tokenizer(vtok.load_config(PRESETS / "vq_patch_tiny.yaml", overrides), tmp_path / "run")
    assert set(vtok.load(final).state_dict()) == set(vtok.build(PRESETS / "vq_patch_tiny.yaml").state_dict())
