"""Every registered tokenizer preset: shapes, dtypes, save/load round trip, bad inputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import vtok
from vtok.tokens import Tokens, load_tokens, save_tokens

PRESETS = sorted((Path(__file__).resolve().parent.parent / "configs" / "tokenizer").glob("*tiny*.yaml"))


@pytest.fixture(params=PRESETS, ids=[p.stem for p in PRESETS])
def tokenizer(request):
    torch.manual_seed(0)
    return vtok.build(request.param).eval()


def test_encode_decode_shapes_and_dtypes(tokenizer, images):
    tokens = tokenizer.encode(images)
    assert isinstance(tokens, Tokens)
    assert tokens.ids.dtype == torch.long and tokens.ids.shape[0] == 2
    assert tokens.ids.shape[2] == len(tokens.codebook_sizes)
    tokens.check_range()
    out = tokenizer.decode(tokens)
    assert out.shape == images.shape and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    lat = tokenizer.lookup(tokens)
    assert lat.shape[:2] == tokens.ids.shape[:2]


def test_forward_matches_encode_in_eval(tokenizer, images):
    out = tokenizer(images)
    assert torch.equal(out.tokens.ids, tokenizer.encode(images).ids)
    torch.testing.assert_close(out.recon.clamp(-1, 1), tokenizer.decode(out.tokens), rtol=0, atol=1e-5)


def test_save_load_round_trip_is_bit_exact(tokenizer, images, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = vtok.load(tmp_path / "tok")
    a, b = tokenizer.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tokens = tokenizer.encode(images)
    assert torch.equal(tokens.ids, loaded.encode(images).ids)
    assert torch.equal(tokenizer.decode(tokens), loaded.decode(tokens))
    assert tokenizer.fingerprint() == loaded.fingerprint()


def test_load_is_strict(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    weights = tmp_path / "tok" / "model.safetensors"
    state = load_file(str(weights))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(weights))
    with pytest.raises(vtok.VtokError, match="unexpected"):
        vtok.load(tmp_path / "tok")


def test_bad_images_are_refused(tokenizer):
    with pytest.raises(vtok.VtokError, match=r"\(B, 3, H, W\)"):
        tokenizer.encode(torch.zeros(3, 32, 32))
    with pytest.raises(vtok.VtokError, match="multiple"):
        tokenizer.encode(torch.zeros(1, 3, 30, 30))
    with pytest.raises(vtok.VtokError, match="float"):
        tokenizer.encode(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))


def test_out_of_range_ids_are_refused(tokenizer, images):
    tokens = tokenizer.encode(images)
    tokens.ids[0, 0, 0] = tokens.codebook_sizes[0]
    with pytest.raises(vtok.VtokError, match="outside codebook"):
        tokenizer.decode(tokens)


def test_token_file_round_trip(tokenizer, images, tmp_path):
    tokens = tokenizer.encode(images)
    save_tokens(tmp_path / "t.safetensors", tokens, "abc", labels=torch.tensor([3, 7]), names=["a.png", "b.png"])
    f = load_tokens(tmp_path / "t.safetensors")
    assert torch.equal(f.tokens.ids, tokens.ids) and f.tokens.grid == tokens.grid
    assert f.tokenizer_hash == "abc" and f.labels.tolist() == [3, 7] and f.names == ["a.png", "b.png"]


def test_vq_f16_has_llamagen_shape():
    tok = vtok.build(Path(__file__).resolve().parent.parent / "configs/tokenizer/vq_f16.yaml")
    params = sum(p.numel() for p in tok.parameters())
    assert 70e6 < params < 74e6  # LlamaGen VQ-16: ~72M
    assert tok.codebook_sizes == (16384,) and tok.downsample_factor == 16


def test_token_files_are_checked_in_the_library(tmp_path, tiny_tokenizer):
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    save_tokens(tmp_path / "t.safetensors", tiny_tokenizer.encode(images), tiny_tokenizer.fingerprint())
    assert load_tokens(tmp_path / "t.safetensors", expect=tiny_tokenizer).tokens.batch_size == 2
    other = vtok.build("configs/tokenizer/vq_tiny.yaml")
    with pytest.raises(vtok.VtokError, match="written by another tokenizer"):
        load_tokens(tmp_path / "t.safetensors", expect=other)


def test_fingerprint_is_cached_and_follows_the_weights():
    tok = vtok.build("configs/tokenizer/vq_tiny.yaml")
    before = tok.fingerprint()
    assert tok.fingerprint() == before
    with torch.no_grad():
        next(tok.parameters()).add_(1.0)  # an in-place update, as an optimiser step makes
    assert tok.fingerprint() != before
