"""Residual quantization: decoding from fewer levels, and error falling with depth after brief training."""

from __future__ import annotations

import pytest
import torch

import vtok
from vtok.builtin import builtin_crops
from vtok.images import pil_to_tensor

RQ_TINY = "configs/tokenizer/rq_tiny.yaml"


def test_levels_slice_tokens_and_refuse_bad_depths(images):
    tok = vtok.build(RQ_TINY).eval()
    tokens = tok.encode(images)
    assert tokens.ids.shape[-1] == 3
    for d in (1, 2, 3):
        coarse = tokens.levels(d)
        assert coarse.ids.shape[-1] == d and coarse.codebook_sizes == tokens.codebook_sizes[:d]
        assert tok.decode(coarse).shape == images.shape
    with pytest.raises(vtok.VtokError, match="depth must lie"):
        tokens.levels(4)
    vq = vtok.build("configs/tokenizer/vq_tiny.yaml").eval()
    with pytest.raises(vtok.VtokError, match="do not fit"):
        vq.decode(vtok.Tokens(tokens.ids[..., :2], (64, 64), tokens.grid))  # a VQ tokenizer has one level


def test_partial_depth_lookup_is_the_sum_of_the_first_levels():
    tok = vtok.build(RQ_TINY, ["model.quantizer.quantize_dropout=false"]).eval()
    q = tok.quantizer
    ids = torch.randint(0, 64, (2, 5, 3))
    full = q.lookup(ids)
    one, two = q.lookup(ids[..., :1]), q.lookup(ids[..., :2])
    three_parts = [q.lookup(ids[..., :1])] + [q.lookup(ids[..., : k + 1]) - q.lookup(ids[..., :k]) for k in (1, 2)]
    torch.testing.assert_close(sum(three_parts), full, rtol=0, atol=1e-5)
    assert not torch.allclose(one, two)


@pytest.mark.slow
def test_reconstruction_error_falls_with_depth_after_brief_training(tmp_path):
    from vtok.tokenizers.train import train_tokenizer

    cfg = vtok.load_config(RQ_TINY, ["train.steps=200", "train.log_every=50", "train.save_every=1000"])
    tok = vtok.load(train_tokenizer(cfg, tmp_path, progress=False)).eval()
    x = torch.stack([pil_to_tensor(im) for _, im in builtin_crops("heldout", 32)])
    tokens = tok.encode(x)
    with torch.no_grad():
        errors = [float((tok.decode(tokens.levels(d)) - x).pow(2).mean()) for d in (1, 2, 3)]
    assert errors[0] > errors[1] > errors[2], errors


def test_collapse_alarm_reads_levels_that_quantize_dropout_removed():
    """A window in which dropout stopped every step above level 1 judges level 1 alone (it read 0% before)."""
    from vtok.config import build_component
    from vtok.stats import CodeUsage
    from vtok.tokenizers.train import collapse_reading

    torch.manual_seed(0)
    q = build_component("quantizer", {"name": "rvq", "dim": 8, "depth": 3, "codebook_size": 64}).train()
    x = torch.randn(4, 64, 8)
    for _ in range(50):  # until dropout keeps only the first level
        ids = q(x).ids
        if (ids[..., 1:] == -1).all():
            break
    assert (ids[..., 1:] == -1).all() and (ids[..., 0] >= 0).all()
    usage = CodeUsage(q.codebook_sizes)
    usage.update(ids)
    levels = usage.compute()
    window_usage, floor = collapse_reading(levels, q.codebook_sizes)
    assert window_usage == levels[0]["distinct"] / 64 > 0.1 and floor == levels[0]["perplexity"] > 2
    # A level that was reached but uses one code still reads as collapsed.
    ids = torch.stack([ids[..., 0], torch.zeros_like(ids[..., 0]), torch.full_like(ids[..., 0], -1)], -1)
    usage.reset()
    usage.update(ids)
    assert collapse_reading(usage.compute(), q.codebook_sizes) == (1 / 64, 1.0)
