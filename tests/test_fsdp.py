"""FSDP2 on two CPU ranks (gloo): the GPT is sharded, checkpoints are sharded, and a resume is exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.training import read_metrics

from .conftest import ROOT, TINY

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _shards(tmp_path: Path) -> Path:
    """Token shards of 16 noise images in 2 classes, from the tiny tokenizer at 32 px."""
    from vtok.shards import write_shards

    rng = np.random.default_rng(0)
    for i in range(16):
        folder = tmp_path / "data" / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    tokenizer = vtok.build(TINY).eval()
    tokenizer.save_pretrained(tmp_path / "tok")
    write_shards(tokenizer, str(tmp_path / "data"), 32, tmp_path / "tokens", 8, progress=False)
    return tmp_path / "tokens"


def _train(tokens: Path, run: Path, steps: int, port: int, fsdp: bool = True) -> None:
    """``steps`` steps of the tiny GPT on 2 CPU ranks, through the FSDP accelerate config or plain data parallel."""
    launch = [sys.executable, "-m", "vtok.launch"]
    launch += ["--config_file", str(ROOT / "configs/accelerate/fsdp.yaml")] if fsdp else ["--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--dynamo_backend", "no"]
    launch += ["--mixed_precision", "no", "--main_process_port", str(port)]
    train = ["-m", "vtok.cli", "train", str(ROOT / "configs/ar/gpt_tiny.yaml"), f"data.source={tokens}"]
    train += ["train.batch_size=4", "train.save_every=2", f"train.steps={steps}", "--out", str(run)]
    result = subprocess.run([*launch, *train], env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow  # five 2-rank launches: ~25 s
def test_fsdp_on_two_cpu_ranks_resumes_exactly_from_sharded_checkpoints(tmp_path):
    tokens = _shards(tmp_path)
    _train(tokens, tmp_path / "a", 4, 29531)
    _train(tokens, tmp_path / "b", 2, 29532)  # stops at step 2: the checkpoint it resumes from
    step2 = tmp_path / "b" / "checkpoints" / "step_00000002"
    assert json.loads((step2 / "state.json").read_text())["sharded"] is True
    # Each rank wrote its own slice of the weights and AdamW moments, no full copy anywhere.
    assert sorted(p.name for p in (step2 / "sharded").iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    assert not (step2 / "model.safetensors").exists() and not (step2 / "optim.pt").exists()
    _train(tokens, tmp_path / "b", 4, 29533)  # resumes at step 2

    def curve(run: Path) -> list[tuple[int, float]]:
        return [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl")]

    assert curve(tmp_path / "a") == curve(tmp_path / "b")
    assert [s for s, _ in curve(tmp_path / "a")] == [1, 2, 3, 4]
    # Sharding changes where the weights live, not the training: plain data parallel gives the same curve
    # (to float rounding: the gradients are summed in another order).
    _train(tokens, tmp_path / "ddp", 4, 29534, fsdp=False)
    assert np.allclose([x for _, x in curve(tmp_path / "ddp")], [x for _, x in curve(tmp_path / "a")], rtol=1e-5)
    a, b = vtok.load(tmp_path / "a" / "final"), vtok.load(tmp_path / "b" / "final")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())  # bit-identical
    # The released model is whole (gathered from both ranks): every tensor has the unsharded shape.
    fresh = type(a)(a.cfg).state_dict()
    assert {k: v.shape for k, v in fresh.items()} == {k: v.shape for k, v in a.state_dict().items()}
