"""The world and the setups of issue 29's rows in ``test_bad_inputs.py`` (bad input, second round).

A user's photograph beside its token file, token files whose metadata breaks the schema, a GPT, shards
(one index pointing outside its folder, one claiming a million codes), a model with NaN weights, a zip
bomb, a preset with a section given twice, and a run with two checkpoints to damage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

import vtok
from vtok.cli import main

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tokenizer" / "vq_tiny.yaml"


def _bad_token_file(path: Path, tokens, **metadata: str) -> None:
    from safetensors.torch import save_file

    meta = {"format": "vtok.tokens/1", "layout": json.dumps(tokens.layout()), "tokenizer_hash": "x", "names": "[]"}
    save_file({"ids": tokens.ids.contiguous()}, str(path), metadata={**meta, **metadata})


def second_round_world(world: Path, tok, tokens, train: list[str]) -> None:
    """What issue 29's rows need: a user's photograph beside its token file, damaged token metadata,
    a GPT, shards (one with an index pointing outside), a NaN model, a zip bomb, a run with two checkpoints."""
    import zipfile

    from vtok.shards import INDEX_FORMAT

    shutil.copy(world / "tokens.safetensors", world / "photo.safetensors")  # `vtok encode photo.png`'s output
    _bad_token_file(world / "names_int.safetensors", tokens, names="5")
    _bad_token_file(world / "names_list.safetensors", tokens, names="[1, 2, 3, 4, 5, 6]")
    _bad_token_file(world / "names_nul.safetensors", tokens, names=json.dumps([f"a\0{i}" for i in range(6)]))
    grid = tokens.layout() | {"grid": [-8, -8]}
    _bad_token_file(world / "grid_negative.safetensors", tokens, layout=json.dumps(grid))
    torch.manual_seed(0)
    vtok.build(ROOT / "configs" / "ar" / "gpt_tiny.yaml").save_pretrained(world / "gpt")
    nan = vtok.build(TINY).eval()
    with torch.no_grad():
        next(nan.parameters()).fill_(float("nan"))
    nan.save_pretrained(world / "tok_nan")
    assert main(["encode", "--tokenizer", str(world / "tok"), str(world / "photos"), "--shards", "10", "--size", "32",
                 "--out", str(world / "shards")]) == 0  # fmt: skip
    for name, change in {"shards_outside": {"shards": ["/etc/passwd"]}, "shards_up": {"shards": ["../../../../etc/hostname"]},
                         "shards_million": {"layout": {"codebook_sizes": [1_000_000], "grid": [8, 8], "scales": None}}}.items():  # fmt: skip
        shutil.copytree(world / "shards", world / name)
        index = json.loads((world / name / "index.json").read_text()) | change
        (world / name / "index.json").write_text(json.dumps(index))
    assert json.loads((world / "shards" / "index.json").read_text())["format"] == INDEX_FORMAT
    with zipfile.ZipFile(world / "bomb.pt", "w", zipfile.ZIP_DEFLATED) as bomb:
        bomb.writestr("archive/data.pkl", b"\0" * (100 << 20))
    (world / "twice.yaml").write_text(TINY.read_text() + "train:\n  steps: 2\n")
    (world / "overlay.yaml").write_text("train: {lr: 2.0e-3}\n")
    assert main(["train", *train, "train.save_every=1", "--out", str(world / "run")]) == 0


def _small_machine(monkeypatch, world=None):
    monkeypatch.setattr("vtok.memory.available_bytes", lambda: 4 << 30)  # 4 GB, whatever this machine has
    monkeypatch.setattr("vtok.memory._device_bytes", lambda: 0)


def _offline(monkeypatch, world=None):
    from huggingface_hub import HfApi

    def refuse(*args, **kwargs):
        raise ConnectionError("offline mode is enabled")

    monkeypatch.setattr(HfApi, "create_repo", refuse)


def _torch_disk_full(monkeypatch, world=None):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4054")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr("vtok.io.shutil.disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))


def _untyped_disk_full(monkeypatch, world=None):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error")

    monkeypatch.setattr("safetensors.torch.save_file", full)
    monkeypatch.setattr("vtok.io.shutil.disk_usage", lambda p: shutil._ntuple_diskusage(10, 10, 0))


def _newest_checkpoint(world: Path) -> Path:
    return world / "run" / "checkpoints" / "step_00000002"


def _pickled_optim(monkeypatch, world):
    import pickle

    (_newest_checkpoint(world) / "optim.pt").write_bytes(pickle.dumps(Path("x")))  # a pickle of another class


def _pickled_rng(monkeypatch, world):
    import os
    import pickle

    (_newest_checkpoint(world) / "rng_rank0.pt").write_bytes(pickle.dumps(os.getcwd))


def _sharded_state(monkeypatch, world):
    import json

    file = _newest_checkpoint(world) / "state.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "sharded": True}))  # as an FSDP run writes it


def _truncated_weights(monkeypatch, world):
    file = _newest_checkpoint(world) / "model.safetensors"
    file.write_bytes(file.read_bytes()[:1000])


def _fifo(monkeypatch, world):
    import os

    os.mkfifo(world / "fifo.png")


def _locked(monkeypatch, world):
    from vtok.outputs import run_lock

    lock = run_lock(world / "run")
    lock.__enter__()
    monkeypatch.setattr("tests.bad_world._held", lock, raising=False)  # released with the row
