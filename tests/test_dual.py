"""Dual-codebook tokenizers: semantic features, shared multi-scale ids, teacher identity, brief training."""

from __future__ import annotations

import json

import pytest
import torch

import vtok
from vtok.stats import CodeUsage

TOKENFLOW = "configs/tokenizer/dual_tiny.yaml"
DUALTOKEN = "configs/tokenizer/dual_separate_tiny.yaml"


def test_tokenflow_tokens_are_shared_ids_over_scales(images):
    tok = vtok.build(TOKENFLOW).eval()
    tokens = tok.encode(images)
    assert tokens.scales == ((1, 1), (2, 2), (4, 4), (8, 8)) and tokens.grid == (8, 8)
    assert tokens.ids.shape == (2, 1 + 4 + 16 + 64, 1)
    features = tok.semantic_features(tokens)
    assert features.shape == (2, 64, tok.teacher.channels)
    # One id addresses both codebooks: the pixel and semantic halves of a token come from the same row.
    vectors = tok.lookup(tokens)
    assert vectors.shape == (2, tokens.num_positions, tok.quantizer.dim)
    assert torch.equal(vectors, tok.quantizer.codebook[tokens.ids[..., 0]])


def test_scale_drop_leaves_skipped_scales_empty():
    tok = vtok.build(TOKENFLOW, ["model.quantizer.scale_drop=1.0"]).train()
    out = tok(torch.rand(2, 3, 32, 32) * 2 - 1)
    ids = out.tokens.ids[..., 0]
    assert bool((ids[:, -64:] == -1).all())  # the finest scale is always dropped when a drop happens
    usage = CodeUsage(tok.codebook_sizes)
    usage.update(out.tokens.ids)  # skipped scales are not counted as codes
    assert usage.compute()[0]["count"] == float((ids >= 0).sum())


def test_dualtoken_has_separate_semantic_and_pixel_ids(images):
    tok = vtok.build(DUALTOKEN).eval()
    tokens = tok.encode(images)
    assert tokens.codebook_sizes == (64, 64, 32, 32) and tokens.ids.shape == (2, 64, 4)
    changed = tokens.ids.clone()
    changed[..., 2:] = 0  # other pixel codes, same semantic codes
    same_semantics = vtok.Tokens(changed, tokens.codebook_sizes, tokens.grid)
    torch.testing.assert_close(tok.semantic_features(same_semantics), tok.semantic_features(tokens))
    assert not torch.equal(tok.decode(same_semantics), tok.decode(tokens))


def test_semantic_dropout_hides_the_semantic_half_from_the_pixel_decoder_in_training_only():
    tok = vtok.build(DUALTOKEN, ["model.semantic_dropout=0.5"])
    z = torch.randn(64, 16, tok.quantizer.dim)
    assert torch.equal(tok.eval()._training_latents(z), z)
    out = tok.train()._training_latents(z)
    sem, pix = out[..., : tok.semantic_dim], out[..., tok.semantic_dim :]
    assert torch.equal(pix, z[..., tok.semantic_dim :])
    dropped = (sem == 0).flatten(1).all(1)
    kept = (sem == z[..., : tok.semantic_dim]).flatten(1).all(1)
    assert bool((dropped ^ kept).all()) and 0 < int(dropped.sum()) < 64  # whole samples, some of each
    with pytest.raises(vtok.VtokError, match=r"semantic_dropout.*must be in \[0, 1\)"):
        vtok.build(DUALTOKEN, ["model.semantic_dropout=1.0"])


def test_teacher_is_not_saved_but_its_hash_is_checked(tmp_path):
    tok = vtok.build(TOKENFLOW)
    assert not any(k.startswith("teacher") for k in tok.state_dict())
    tok.save_pretrained(tmp_path / "tok")
    config = json.loads((tmp_path / "tok" / "config.json").read_text())
    assert config["model"]["teacher"]["weights_sha256"] == tok.teacher.sha256
    vtok.load(tmp_path / "tok")
    config["model"]["teacher"]["weights_sha256"] = "0" * 16
    (tmp_path / "tok" / "config.json").write_text(json.dumps(config))
    with pytest.raises(vtok.VtokError, match="trained against another teacher"):
        vtok.load(tmp_path / "tok")


@pytest.mark.slow
@pytest.mark.parametrize("preset", [TOKENFLOW, DUALTOKEN])
def test_brief_training_brings_semantic_features_toward_the_teacher(preset, tmp_path):
    from vtok.tokenizers.train import train_tokenizer
    from vtok.training import read_metrics

    cfg = vtok.load_config(preset, ["train.steps=30", "train.log_every=1", "train.save_every=1000"])
    train_tokenizer(cfg, tmp_path, progress=False)
    semantic = [r["q_semantic"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert sum(semantic[-5:]) / 5 < sum(semantic[:5]) / 5


@pytest.mark.parametrize("preset", [TOKENFLOW, DUALTOKEN])
def test_dual_quantizers_declare_their_semantic_and_pixel_halves(preset):
    tok = vtok.build(preset)
    q = tok.quantizer
    assert q.semantic_dim + q.pixel_dim == q.dim and tok.semantic_dim == q.semantic_dim
    assert tok.quant_conv.out_channels == q.pixel_dim and tok.semantic_in[-1].out_channels == q.semantic_dim


def test_a_quantizer_without_semantic_and_pixel_halves_is_refused_in_one_line():
    with pytest.raises(vtok.VtokError, match=r"^model\.quantizer: .*; vq declares no semantic_dim and no pixel_dim$"):
        vtok.build(TOKENFLOW, ["model.quantizer={name: vq, dim: 12, codebook_size: 64}"])


PUBLISHED = "configs/tokenizer/dual_tokenflow_clipb_tiny.yaml"


def test_published_tokenflow_reads_pixels_from_the_pixel_half_and_semantics_from_the_other():
    tok = vtok.build(PUBLISHED).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        out = tok(x)
        tokens = tok.encode(x)
        assert torch.equal(tokens.ids, out.tokens.ids) and tokens.ids.shape == (2, 1 + 4 + 9 + 16, 1)
        # The straight-through latents of the forward are the codes lookup gives for its ids.
        z_q = tok.quantizer(tok.quantizer_inputs(x)).z_q
        torch.testing.assert_close(z_q, tok.quantizer.lookup(tokens.ids), atol=1e-5, rtol=1e-5)
        pixels, semantic = tok.decode(tokens), tok.semantic_features(tokens)
        tok.quantizer.semantic_codes.add_(1.0)  # other semantic codes: pixels keep, features move
        assert torch.equal(tok.decode(tokens), pixels)
        assert not torch.allclose(tok.semantic_features(tokens), semantic)
    assert semantic.shape == (2, 16, 112)


def test_published_tokenflow_trains_every_part_and_drops_one_inner_scale(tmp_path):
    tok = vtok.build(PUBLISHED, ["model.quantizer.scale_drop=1.0"]).train()
    out = tok(torch.rand(2, 3, 32, 32) * 2 - 1)
    ids = out.tokens.ids[..., 0]
    dropped = [i for i, part in enumerate(ids.split([1, 4, 9, 16], dim=1)) if bool((part == -1).all())]
    assert len(dropped) == 1 and dropped[0] != 0  # one scale, never the first (TokenFlow's drop_scale)
    assert set(out.losses) == {"codebook", "commit", "semantic"}  # semantic: 1 - cosine to the teacher
    (out.recon.square().mean() + sum(out.losses.values())).backward()
    for part in ("semantic_encoder", "semantic_in", "semantic_decoder", "encoder", "quantizer", "decoder"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(tok, part).parameters()), part
    tok.save_pretrained(tmp_path / "tok")
    assert json.loads((tmp_path / "tok" / "config.json").read_text())["model"]["teacher"]["weights_sha256"]
    again = vtok.load(tmp_path / "tok").eval()
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.equal(again.encode(x).ids, tok.eval().encode(x).ids)
    no_teacher = vtok.build(PUBLISHED, ["model.teacher=null"]).train()
    with pytest.raises(vtok.VtokError, match="needs model.teacher"):
        no_teacher(x)
