"""Fine-tuning: init_from, freezing by part, decoder-only keeps ids, partial loads named, class tables grown."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

import vtok
from vtok.data import DataConfig, iterate_batches
from vtok.errors import VtokError
from vtok.tokenizers.train import TokenizerTrainer
from vtok.training import read_metrics

from .conftest import TINY

BASE = ["train.steps=2", "train.save_every=2", "loss.disc_start=1000", "train.ema_decay=null"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny tokenizer trained a few steps (its codebook initialised), saved as a model folder."""
    run = tmp_path_factory.mktemp("base")
    return TokenizerTrainer(vtok.load_config(TINY, BASE), run, progress=False).train()


def _train(run: Path, *overrides: str) -> TokenizerTrainer:
    trainer = TokenizerTrainer(vtok.load_config(TINY, [*BASE, *overrides]), run, progress=False)
    trainer.train()
    return trainer


def test_a_run_initialised_from_a_model_starts_at_its_loss(saved, tmp_path):
    _train(tmp_path / "ft", f"train.init_from={saved}", "train.steps=1", "train.log_every=1")
    logged = read_metrics(tmp_path / "ft" / "metrics.jsonl")[0]["total"]
    cfg = vtok.load_config(TINY, BASE)
    model = vtok.load(saved).train()
    from vtok.config import build_component

    loss_fn = build_component("loss", cfg["loss"], "loss")
    x = next(iterate_batches(DataConfig(**cfg["data"]), cfg["train"]["batch_size"], cfg["train"]["seed"]))
    with torch.no_grad():
        total, _ = loss_fn.generator_loss(x, model(x), 0, model.last_layer, loss_fn.discriminator)
    assert abs(logged - float(total)) < 1e-4
    record = json.loads((tmp_path / "ft" / "init_from.json").read_text())
    assert record["init_from"] == str(saved) and len(record["sha256"]) == 64 and record["skipped"] == []


def test_frozen_parts_are_bit_identical_and_decoder_only_keeps_every_id(saved, tmp_path):
    trainer = _train(tmp_path / "ft", f"train.init_from={saved}", "train.freeze=[encoder,quantizer]", "train.lr=1e-2")
    before, after = vtok.load(saved), vtok.load(tmp_path / "ft" / "final")
    for name, value in before.state_dict().items():
        frozen = name.startswith(("encoder.", "quant_conv.", "quantizer."))
        assert torch.equal(value, after.state_dict()[name]) == frozen or not frozen, name
    assert not torch.equal(before.decoder.conv_out.weight, after.decoder.conv_out.weight)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    assert torch.equal(before.encode(images).ids, after.encode(images).ids)
    optimised = {id(p) for group in trainer.opt_g.param_groups for p in group["params"]}
    assert not any(id(p) in optimised for p in trainer.accelerator.unwrap_model(trainer.model).encoder.parameters())


def test_partial_loads_name_the_skipped_keys_and_other_families_are_refused(saved, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="vtok.train"):
        _train(tmp_path / "wide", f"train.init_from={saved}", "model.decoder.ch=64")
    assert "decoder." in caplog.text and "kept the preset's initialisation" in caplog.text
    skipped = json.loads((tmp_path / "wide" / "init_from.json").read_text())["skipped"]
    assert skipped and all(k.startswith("decoder.") for k in skipped)
    with pytest.raises(VtokError, match="code dim"):
        _train(tmp_path / "dim", f"train.init_from={saved}", "model.quantizer.dim=8")
    with pytest.raises(VtokError, match="no part 'encodr'"):
        _train(tmp_path / "typo", "train.freeze=[encodr]")


def test_reinit_unused_codes_keeps_used_codes(saved, tmp_path):
    model = vtok.load(saved)
    x = next(iterate_batches(DataConfig(source="builtin", image_size=32), 8, 1))
    latents = model.quantizer_inputs(x)
    used = torch.unique(model.quantizer.quantize_ids(latents))
    before = model.quantizer.vq._codebook.embed.clone()
    refreshed = model.quantizer.refresh_unused(latents)
    after = model.quantizer.vq._codebook.embed
    assert refreshed == 64 - len(used)
    assert torch.equal(before[0, used], after[0, used])
    assert torch.equal(model.quantizer.quantize_ids(latents), model.quantizer.quantize_ids(latents))


def test_a_gpt_grown_to_more_classes_keeps_its_old_rows():
    from vtok.config import build_component

    small = build_component("model", {"name": "gpt", "codebook_sizes": [16], "grid": [2, 2], "num_classes": 3,
                                      "dim": 32, "depth": 1, "heads": 2})  # fmt: skip
    big = build_component("model", {**small.spec, "num_classes": 5})
    state = big.adapt_state(small.state_dict())
    old, new = small.cls_embedding.weight, state["cls_embedding.weight"]
    assert new.shape == (6, 32)
    assert torch.equal(new[:3], old[:3]) and torch.equal(new[-1], old[-1])  # classes 0-2 and the null class
    assert torch.allclose(new[3], old[:3].mean(0)) and torch.allclose(new[4], old[:3].mean(0))
