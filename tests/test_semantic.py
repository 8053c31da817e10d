"""The semantic regulariser: its terms, its hook on any tokenizer module, training and resuming with it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import vtok
from vtok.config import build_component
from vtok.training import read_metrics

PATCH_TINY = "configs/tokenizer/vq_patch_tiny.yaml"
REG = (
    "loss.regularizer={name: semantic, teacher: {name: effnet_lite0, stage: 3}, features: decoder.blocks, "
    "proj_width: 32, cosine_weight: 0.5, margin_cosine_weight: 1.0, distance_weight: 1.0}"
)


class MapTokenizer(nn.Module):
    """A stand-in tokenizer whose ``features`` module returns a fixed map."""

    def __init__(self, feats: torch.Tensor):
        super().__init__()
        self.feats = feats
        self.stage = nn.Conv2d(feats.shape[1], feats.shape[1], 1)

    def forward(self, x: torch.Tensor) -> None:
        self.stage(self.feats)


def _regularizer(**options) -> nn.Module:
    cfg = {"name": "semantic", "teacher": {"name": "effnet_lite0", "stage": 3}, "features": "stage", **options}
    return build_component("regularizer", cfg)


def test_every_term_is_zero_on_the_teacher_features_and_positive_elsewhere():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    probe = _regularizer(proj_layers=1)
    target = probe.teacher(images)  # (2, 112, 4, 4)
    options = dict(proj_layers=1, cosine_weight=1.0, margin_cosine_weight=1.0, distance_weight=1.0)
    for feats, zero in ((target, True), (torch.randn_like(target), False)):
        reg = _regularizer(**options)
        tok = MapTokenizer(feats).train()
        reg.attach(tok)
        with torch.no_grad():
            reg.proj[0].weight.copy_(torch.eye(target.shape[1]))
            reg.proj[0].bias.zero_()
        tok.stage.weight.data.copy_(torch.eye(target.shape[1])[..., None, None])
        tok.stage.bias.data.zero_()
        tok(images)
        loss, logs = reg(images)
        if zero:
            assert loss.item() == pytest.approx(0.0, abs=1e-5) and logs["semantic_cosine"] == pytest.approx(1.0)
        else:
            assert loss.item() > 0.5 and logs["semantic_distance"] > 0


def test_margin_cosine_stops_pulling_inside_its_margin():
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    reg = _regularizer(proj_layers=1, cosine_weight=0.0, margin_cosine_weight=1.0, cosine_margin=0.5)
    target = reg.teacher(images)
    noisy = target + 0.3 * target.norm(dim=1, keepdim=True) / target.shape[1] ** 0.5 * torch.randn_like(target)
    tok = MapTokenizer(noisy).train()
    reg.attach(tok)
    with torch.no_grad():
        reg.proj[0].weight.copy_(torch.eye(target.shape[1]))
        reg.proj[0].bias.zero_()
        tok.stage.weight.copy_(torch.eye(target.shape[1])[..., None, None])
        tok.stage.bias.zero_()
    tok(images)
    loss, logs = reg(images)
    assert logs["semantic_cosine"] > 0.6 and loss.item() == 0.0  # every position within the 0.5 margin


def test_an_unknown_feature_module_is_one_line():
    tok = vtok.build(PATCH_TINY)
    reg = _regularizer(features="decoder.nothing_here")
    with pytest.raises(vtok.VtokError, match="no module 'decoder.nothing_here'"):
        reg.attach(tok)


def test_training_with_the_regulariser_logs_it_resumes_and_saves_a_plain_tokenizer(tmp_path):
    from vtok.tokenizers.train import train_tokenizer

    common = ["train.log_every=1", "train.save_every=2", "loss.disc_start=100000"]
    cfg = vtok.load_config(PATCH_TINY, [REG, *common, "train.steps=2"])
    run = tmp_path / "run"
    train_tokenizer(cfg, run, progress=False)
    cfg = vtok.load_config(PATCH_TINY, [REG, *common, "train.steps=4"])
    final = train_tokenizer(cfg, run, progress=False)  # resumes at step 2, the projection with it
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert all(0 < r["semantic"] and -1 <= r["semantic_cosine"] <= 1 for r in records)
    straight = tmp_path / "straight"
    train_tokenizer(cfg, straight, progress=False)
    reference = read_metrics(straight / "metrics.jsonl")
    assert [r["semantic"] for r in records] == pytest.approx([r["semantic"] for r in reference], rel=1e-5)
    plain = vtok.build(PATCH_TINY)
    assert set(vtok.load(final).state_dict()) == set(plain.state_dict())  # no projection, no teacher
