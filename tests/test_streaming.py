"""Streaming image reads (DataLoader workers) and the split of encode/eval work across accelerate ranks."""

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
from safetensors import safe_open

from vtok.cli import main
from vtok.eval.frechet import FeatureReservoir, GaussianStats
from vtok.ranks import Ranks, batch_block, my_shards
from vtok.streaming import ImageFiles, file_batches, rebatch, stream_images
from vtok.tokens import load_tokens

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def tok_dir(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.fixture
def photos(tmp_path):
    """A dozen JPEGs of varied sizes in two class folders, and one unreadable file."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(6):
            h, w = rng.integers(30, 70, 2)
            image = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
            image.save(tmp_path / "imgs" / c / f"{i}.jpg", quality=90)
    (tmp_path / "imgs" / "dog" / "bad.png").write_bytes(b"not an image")
    return tmp_path / "imgs"


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_workers_give_the_same_tokens_as_the_main_process(tok_dir, photos, tmp_path):
    common = ["--tokenizer", str(tok_dir), str(photos), "--size", "32", "--batch-size", "4"]
    for w in (0, 2):
        assert main(["encode", *common, "--workers", str(w), "--out", str(tmp_path / f"t{w}.safetensors")]) == 0
        assert main(["encode", *common, "--workers", str(w), "--shards", "5", "--out", str(tmp_path / f"s{w}")]) == 0
    a, b = load_tokens(tmp_path / "t0.safetensors"), load_tokens(tmp_path / "t2.safetensors")
    assert torch.equal(a.tokens.ids, b.tokens.ids) and a.names == b.names and len(a.names) == 12
    assert not any("bad.png" in n for n in a.names)
    shards = sorted((tmp_path / "s0").glob("shard_*.safetensors"))
    assert len(shards) == 3
    for shard in shards:
        x, y = _tensors(shard), _tensors(tmp_path / "s2" / shard.name)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_rebatch_gives_the_batches_of_loading_everything_first(tmp_path):
    files = []
    for i in range(7):
        path = tmp_path / f"{i}.png"
        if i in (1, 4):
            path.write_bytes(b"garbage")
        else:
            Image.new("RGB", (20, 24), (i * 30, 0, 0)).save(path)
        files.append(path)
    loaded = stream_images(ImageFiles(files, 16), file_batches(len(files), 3), workers=2)
    batches = list(rebatch(loaded, 3))
    assert [b.indices for b in batches] == [[0, 2, 3], [5, 6]]
    assert [i for b in batches for i, _ in b.skipped] == [1, 4]
    assert batches[0].images.shape == (3, 3, 16, 16)


def test_an_unreadable_file_named_explicitly_is_one_error_line(tok_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    argv = ["encode", "--tokenizer", str(tok_dir), str(bad), "--size", "32", "--workers", "1"]
    assert main([*argv, "--out", str(tmp_path / "t.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("vtok: error: cannot read image") and "Traceback" not in err


def test_rank_rules_cover_every_item_once_in_order():
    for count, batch, world in ((13, 4, 2), (3, 4, 3), (100, 16, 7)):
        blocks = [batch_block(count, batch, Ranks(r, world)) for r in range(world)]
        assert [i for b in blocks for i in b] == list(range(count))
        assert all(b.start % batch == 0 for b in blocks if len(b))
        shards = [my_shards(count, Ranks(r, world)) for r in range(world)]
        assert sorted(k for s in shards for k in s) == list(range(count))


def test_merged_statistics_equal_one_pass():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    whole, a, b = GaussianStats(6), GaussianStats(6), GaussianStats(6)
    whole.update(x)
    a.update(x[:20])
    b.update(x[20:])
    a.merge(b)
    assert a.count == 50 and np.allclose(a.covariance, whole.covariance, rtol=1e-12, atol=1e-14)
    one, r0, r1 = FeatureReservoir(6, 64), FeatureReservoir(6, 64), FeatureReservoir(6, 64)
    one.update(torch.from_numpy(x))
    r0.update(torch.from_numpy(x[:20]))
    r1.update(torch.from_numpy(x[20:]))
    r0.merge(r1)
    assert np.array_equal(r0.sample, one.sample)  # below capacity: every row, in one process's order
    small, s1 = FeatureReservoir(6, 16), FeatureReservoir(6, 16)
    small.update(torch.from_numpy(x[:30]))
    s1.update(torch.from_numpy(x[30:]))
    small.merge(s1)
    assert small.seen == 50 and len(small.sample) == 16
    rows = {tuple(r) for r in x.astype(np.float32)}
    assert all(tuple(r) in rows for r in small.sample)


def _launch(args: list[str], port: int) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vtok.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "vtok.cli"]
    return subprocess.run([*cmd, *args], env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _failure(result: subprocess.CompletedProcess) -> str:
    """The ranks' own error lines first (the launcher's report of them follows), then the tail."""
    keys = ("vtok: error", "Error", "terminate called", "what():", "Abort", "Fatal", "corrupt", "free()", "malloc")
    errors = [line for line in result.stderr.splitlines() if any(k in line for k in keys)]
    return "\n".join(errors[:10]) + "\n...\n" + result.stderr[-1500:]


@pytest.mark.slow  # two processes joined by gloo: ~30 s
def test_two_ranks_encode_the_shards_of_one_process(tok_dir, photos, tmp_path):
    common = ["encode", "--tokenizer", str(tok_dir), str(photos), "--size", "32", "--batch-size", "4", "--shards", "5"]
    assert main([*common, "--workers", "0", "--out", str(tmp_path / "one")]) == 0
    result = _launch([*common, "--workers", "1", "--out", str(tmp_path / "two")], 29541)
    assert result.returncode == 0, _failure(result)
    one = json.loads((tmp_path / "one" / "index.json").read_text())
    two = json.loads((tmp_path / "two" / "index.json").read_text())
    assert one == two and one["count"] == 12
    for name in one["shards"]:
        x, y = _tensors(tmp_path / "one" / name), _tensors(tmp_path / "two" / name)
        assert all(torch.equal(x[k], y[k]) for k in x)
    # Resumable per shard on another number of ranks: a lost shard is rewritten, the others kept.
    (tmp_path / "two" / one["shards"][1]).unlink()
    assert main([*common, "--workers", "0", "--out", str(tmp_path / "two")]) == 0
    resumed, expected = (_tensors(tmp_path / d / one["shards"][1]) for d in ("two", "one"))
    assert torch.equal(resumed["ids"], expected["ids"])


@pytest.mark.slow  # two processes with the FID Inception each: ~60 s
def test_two_ranks_evaluate_as_one_process(tok_dir, photos, tmp_path):
    common = ["eval", "--tokenizer", str(tok_dir), "--data", str(photos), "--resolution", "32"]
    common += ["--metrics", "rfid,psnr,codebook", "--batch-size", "4"]
    assert main([*common, "--workers", "0", "--out", str(tmp_path / "one")]) == 0
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    if "rfid" not in one["scores"]:
        pytest.skip(f"rfid unavailable here: {one.get('skipped')}")
    result = _launch([*common, "--workers", "1", "--out", str(tmp_path / "two")], 29542)
    assert result.returncode == 0, _failure(result)
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["setting"]["images"] == one["setting"]["images"] == 12
    assert two["scores"]["rfid"]["rFID"] == pytest.approx(one["scores"]["rfid"]["rFID"], rel=1e-6)
    assert two["scores"]["rfid"]["KID"] == pytest.approx(one["scores"]["rfid"]["KID"], rel=1e-6)
    assert two["scores"]["psnr"]["PSNR"] == pytest.approx(one["scores"]["psnr"]["PSNR"], rel=1e-9)
    assert two["scores"]["codebook"] == one["scores"]["codebook"]


HEAP_CHECK = """
import ctypes
from vtok import heap
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
assert not heap.release_free_heap(2**20)  # the first call records where resident memory stands
start = heap.resident_bytes()
blocks = [libc.malloc(64 * 1024) for _ in range(800)]  # 50 MB of heap chunks (below the mmap threshold)
for block in blocks:
    ctypes.memset(block, 1, 64 * 1024)  # resident
for i, block in enumerate(blocks):
    if i % 10:  # every tenth stays live, so the heap cannot shrink from its top: freed pages stay resident
        libc.free(block)
assert heap.resident_bytes() - start > 40 * 2**20, "the freed chunks did not stay resident"
assert not heap.release_free_heap(2**40)
assert heap.release_free_heap(10 * 2**20)
assert heap.resident_bytes() - start < 20 * 2**20, "malloc_trim did not hand the freed pages back"
"""


def test_freed_heap_pages_go_back_to_the_system_past_the_limit():
    from vtok import heap

    if heap._libc() is None or heap.resident_bytes() is None:
        pytest.skip("not glibc on Linux: vtok.heap does nothing here")
    # A fresh interpreter: in a long test session the heap already holds freed pages that new chunks reuse.
    result = subprocess.run([sys.executable, "-c", HEAP_CHECK], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-1500:]
