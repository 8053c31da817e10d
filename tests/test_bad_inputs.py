"""Every bad input is one ``vtok: error:`` line, exit status 2, no traceback, and the inputs unchanged.

A table: command x bad input x the words the error must contain. A new command adds
its rows here. Each row runs ``vtok`` in-process on a fresh copy of the same small
world (a tiny tokenizer, a photograph, a token file, a preset) and hashes every file
of that world before and after.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from tests import bad_world
from tests.bad_world import (
    _fifo,
    _locked,
    _offline,
    _pickled_optim,
    _pickled_rng,
    _sharded_state,
    _small_machine,
    _torch_disk_full,
    _truncated_weights,
    _untyped_disk_full,
    second_round_world,
)
from vtok.cli import main
from vtok.tokens import load_tokens, save_tokens

ROOT = Path(__file__).resolve().parent.parent


def _vtbench_parquet_no_pyarrow(monkeypatch, world: Path) -> None:
    """VTBench's Hugging Face files as downloaded, on a machine without pyarrow."""
    import sys

    (world / "task3-movie-posters").mkdir()
    (world / "task3-movie-posters" / "test-00000-of-00001.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)


TINY = ROOT / "configs" / "tokenizer" / "vq_tiny.yaml"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """The world every row starts from (copied per row, so no row sees another's leftovers)."""
    world = tmp_path_factory.mktemp("world")
    torch.manual_seed(0)
    tok = vtok.build(TINY).eval()
    tok.save_pretrained(world / "tok")
    rng = np.random.default_rng(0)
    (world / "photos").mkdir()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(world / "photos" / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(world / "photos" / "b.png")
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(world / "photo.png")
    # Over the pixel budget for encoding at its own size; one colour, so the file is small.
    Image.new("RGB", (4100, 4100), (90, 120, 30)).save(world / "huge.png")
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        tokens = tok.encode(images)
    save_tokens(world / "tokens.safetensors", tokens, tok.fingerprint(), names=[f"{i}.png" for i in range(6)])
    save_tokens(world / "short_names.safetensors", tokens, tok.fingerprint(), names=["only_one.png"])
    (world / "notes.txt").write_text("a user's file that no command may replace\n")
    second_round_world(world, tok, tokens, TRAIN)
    (world / "alias_bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
        + "model: {name: grid}\n"
    )
    return world


@pytest.fixture
def world(template, tmp_path) -> Path:
    copy = tmp_path / "w"
    shutil.copytree(template, copy)
    return copy


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own exits
        code = exit_.code
    return code, capsys.readouterr().err


def _read_only(monkeypatch, world=None):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", kwargs.get("dir") or (args[2] if len(args) > 2 else "."))

    monkeypatch.setattr("vtok.outputs.tempfile.mkstemp", refuse)


def _disk_full_on_safetensors(monkeypatch, world=None):
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space" })'
        )

    monkeypatch.setattr("safetensors.torch.save_file", full)


def _disk_full_on_png(monkeypatch, world=None):
    def full(self, fp, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(fp))

    monkeypatch.setattr(Image.Image, "save", full)


def _tiny_pixel_limit(monkeypatch, world=None):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # every test image is now a "decompression bomb"


TRAIN = [str(TINY), "train.steps=2", "train.batch_size=2", "data.image_size=32", "train.log_every=1"]
ENC = ["encode", "--tokenizer", "{w}/tok", "{w}/photo.png", "--size", "32"]
DEC = ["decode", "{w}/tokens.safetensors", "--tokenizer", "{w}/tok"]
REC = ["reconstruct", "--tokenizer", "{w}/tok", "{w}/photo.png", "--size", "32"]
BENCH = ["bench", "--tokenizer", "{w}/tok", "--resolution", "32", "--metrics", "psnr"]
GEN = ["generate", "--model", "{w}/tok", "--tokenizer", "{w}/tok", "--out", "{w}/g.png"]
PROTO = ["eval", "--tokenizer", "{w}/tok", "--protocol", "imagenet-val", "--data", "{w}/photos", "--resolution", "32",
         "--out", "{w}/e", "--count", "2"]  # fmt: skip

# id -> (argv with {w} for the world, setup(monkeypatch) or None, words the error line must contain)
ROWS: dict[str, tuple[list[str], Callable | None, str]] = {
    # 1. data lost: --out naming an input or a file of another kind
    "encode-out-is-the-input": ([*ENC, "--out", "{w}/photo.png"], None, "is one of the inputs"),
    "encode-out-is-a-user-file": ([*ENC, "--out", "{w}/notes.txt"], None, "not a token file"),
    "encode-out-is-an-image": ([*ENC, "--out", "{w}/photos/a.png"], None, "not a token file"),
    # 2. memory: a huge image at its own size
    "encode-huge-without-size": (
        ["encode", "--tokenizer", "{w}/tok", "{w}/huge.png", "--out", "{w}/t.safetensors"],
        None,
        "pass --size",
    ),
    "reconstruct-huge-without-size": (
        ["reconstruct", "--tokenizer", "{w}/tok", "{w}/huge.png", "--out", "{w}/r"],
        None,
        "pass --size",
    ),
    # 3. a decompression bomb named on the command line (inside a folder it is skipped: see below)
    "encode-bomb": ([*ENC, "--out", "{w}/t.safetensors"], _tiny_pixel_limit, "decompression-bomb"),
    # 4. a token file whose names do not match its ids
    "decode-short-names": (
        ["decode", "{w}/short_names.safetensors", "--tokenizer", "{w}/tok", "--out", "{w}/d"],
        None,
        "1 names for 6 images",
    ),
    # 5. and 7. bad numbers in a preset
    "train-negative-steps": (["train", *TRAIN, "train.steps=-5", "--out", "{w}/r"], None, "train.steps"),
    "train-zero-batch": (["train", *TRAIN, "train.batch_size=0", "--out", "{w}/r"], None, "train.batch_size"),
    "train-negative-batch": (["train", *TRAIN, "train.batch_size=-2", "--out", "{w}/r"], None, "train.batch_size"),
    "train-nan-lr": (["train", *TRAIN, "train.lr=nan", "--out", "{w}/r"], None, "train.lr"),
    "train-negative-lr": (["train", *TRAIN, "train.lr=-1e-3", "--out", "{w}/r"], None, "train.lr"),
    "train-zero-image-size": (["train", *TRAIN, "data.image_size=0", "--out", "{w}/r"], None, "data.image_size"),
    "train-zero-codebook": (
        ["train", *TRAIN, "model.quantizer.codebook_size=0", "--out", "{w}/r"],
        None,
        "model.quantizer.codebook_size",
    ),
    "train-zero-width": (
        ["train", *TRAIN, "model.encoder.ch=0", "--out", "{w}/r"],
        None,
        "model.encoder.ch",
    ),  # ranged: refused before any layer is built
    "train-alias-bomb": (["train", "{w}/alias_bomb.yaml", "--out", "{w}/r"], None, "aliases"),
    # 7. bad numbers on the command line
    "encode-zero-size": ([*ENC[:-1], "0", "--out", "{w}/t.safetensors"], None, "--size"),
    "encode-negative-size": ([*ENC[:-1], "-3", "--out", "{w}/t.safetensors"], None, "--size"),
    "encode-zero-batch": ([*ENC, "--batch-size", "0", "--out", "{w}/t.safetensors"], None, "--batch-size"),
    "decode-zero-batch": ([*DEC, "--batch-size", "0", "--out", "{w}/d"], None, "--batch-size"),
    "generate-negative-top-k": ([*GEN, "--top-k", "-5"], None, "--top-k"),
    "generate-zero-top-p": ([*GEN, "--top-p", "0"], None, "--top-p"),
    "generate-nan-cfg": ([*GEN, "--cfg", "nan"], None, "--cfg"),
    "generate-zero-per-class": ([*GEN, "--classes", "1", "--per-class", "0"], None, "--per-class"),
    # 9. nonsense that used to be accepted silently
    "generate-top-p-over-one": ([*GEN, "--top-p", "2"], None, "--top-p"),
    "generate-negative-temperature": ([*GEN, "--temperature", "-1"], None, "--temperature"),
    "generate-negative-cfg": ([*GEN, "--cfg", "-3"], None, "--cfg"),
    "generate-not-a-png": ([*GEN[:-1], "{w}/g.jpg"], None, ".png"),
    # 8. output errors, found before the work
    "decode-out-is-a-file": ([*DEC, "--out", "{w}/notes.txt"], None, "is a file"),
    "reconstruct-out-is-a-file": ([*REC, "--out", "{w}/notes.txt"], None, "is a file"),
    "train-out-is-a-file": (["train", *TRAIN, "--out", "{w}/notes.txt"], None, "is a file"),
    "train-out-is-a-user-folder": (["train", *TRAIN, "--out", "{w}/photos"], None, "not a run folder"),
    "eval-out-is-a-file": (
        ["eval", "--tokenizer", "{w}/tok", "--metrics", "psnr", "--out", "{w}/notes.txt"],
        None,
        "is a file",
    ),
    "encode-out-is-a-folder": ([*ENC, "--out", "{w}/photos"], None, "is a folder"),
    "convert-out-is-a-user-folder": (
        ["convert", "--from", "llamagen-vq", "{w}/notes.txt", "--out", "{w}/photos"],
        None,
        "not a vtok model folder",
    ),
    "reconstruct-out-inside-the-input": (
        ["reconstruct", "--tokenizer", "{w}/tok", "{w}/photos", "--size", "32", "--out", "{w}/photos/r"],
        None,
        "inside the input",
    ),
    "encode-read-only-folder": ([*ENC, "--out", "{w}/ro/t.safetensors"], _read_only, "Read-only"),
    "decode-read-only-folder": ([*DEC, "--out", "{w}/ro"], _read_only, "Read-only"),
    "reconstruct-read-only-folder": ([*REC, "--out", "{w}/ro"], _read_only, "Read-only"),
    "encode-disk-full": ([*ENC, "--out", "{w}/t.safetensors"], _disk_full_on_safetensors, "no space left"),
    "decode-disk-full": ([*DEC, "--out", "{w}/d"], _disk_full_on_png, "no space left"),
    "train-checkpoint-disk-full": (["train", *TRAIN, "--out", "{w}/r"], _disk_full_on_safetensors, "no space left"),
    # --- issue 29, data loss: outputs inside things vtok did not make for this command
    "generate-over-a-photograph": ([*GEN[:-1], "{w}/photo.png"], None, "not a token file vtok wrote"),
    "convert-over-a-trained-model": (
        ["convert", "--from", "llamagen-vq", "{w}/notes.txt", "--out", "{w}/tok"],
        None,
        "a vtok model folder",
    ),
    "decode-out-a-tokenizer": ([*DEC, "--out", "{w}/tok"], None, "a vtok model folder"),
    "decode-out-inside-a-tokenizer": ([*DEC, "--out", "{w}/tok/decoded"], None, "is inside"),
    "reconstruct-out-a-tokenizer": ([*REC, "--out", "{w}/tok"], None, "a vtok model folder"),
    "reconstruct-out-a-run": ([*REC, "--out", "{w}/run"], None, "a vtok training run"),
    "demo-out-a-tokenizer": (["demo", "--out", "{w}/tok"], None, "a vtok model folder"),
    "decode-out-a-user-folder": ([*DEC, "--out", "{w}/photos"], None, "a folder vtok did not make"),
    "encode-out-png-inside-the-data": (
        ["encode", "--tokenizer", "{w}/tok", "{w}/photos", "--size", "32", "--out", "{w}/photos/tokens.png"],
        None,
        "inside the input",
    ),
    "encode-out-named-png": ([*ENC, "--out", "{w}/tokens.png"], None, "named like an image"),
    "encode-out-inside-a-model": ([*ENC, "--out", "{w}/gpt/t.safetensors"], None, "is inside"),
    "train-out-inside-its-data": (
        ["train", *TRAIN, "data.source={w}/photos", "--out", "{w}/photos/run"],
        None,
        "inside the input",
    ),
    "train-out-a-tokenizer": (["train", *TRAIN, "--out", "{w}/tok"], None, "a vtok model folder"),
    "push-offline-writes-nothing": (["push", "{w}/tok", "org/name"], _offline, "cannot reach the Hub"),
    "train-while-another-runs": (
        ["train", *TRAIN, "train.save_every=1", "--out", "{w}/run"],
        _locked,
        "in use by another vtok train",
    ),
    # --- tracebacks: disk full inside torch.save, damaged checkpoints (named, with the fallback)
    "train-torch-disk-full": (["train", *TRAIN, "--out", "{w}/r"], _torch_disk_full, "no space left"),
    "encode-untyped-disk-full": ([*ENC, "--out", "{w}/t.safetensors"], _untyped_disk_full, "no space left"),
    "resume-pickled-optim": (
        ["train", *TRAIN, "train.save_every=1", "--out", "{w}/run"],
        _pickled_optim,
        "optim.pt is damaged (UnpicklingError); delete",
    ),
    "resume-pickled-rng": (
        ["train", *TRAIN, "train.save_every=1", "--out", "{w}/run"],
        _pickled_rng,
        "rng_rank0.pt is damaged",
    ),
    "resume-sharded-without-fsdp": (
        ["train", *TRAIN, "train.save_every=1", "--out", "{w}/run"],
        _sharded_state,
        "was written with FSDP; resume it with",
    ),
    "resume-truncated-weights": (
        ["train", *TRAIN, "train.save_every=1", "--out", "{w}/run"],
        _truncated_weights,
        "model.safetensors is damaged",
    ),
    # --- memory, on a 4 GB machine
    "eval-huge-resolution": (
        ["eval", "--tokenizer", "{w}/tok", "--metrics", "psnr", "--resolution", "100000", "--out", "{w}/e"],
        _small_machine,
        "needs about",
    ),
    "train-huge-image-size": (
        ["train", *TRAIN, "data.image_size=100000", "--out", "{w}/r"],
        _small_machine,
        "needs about",
    ),
    "train-huge-codebook": (
        ["train", *TRAIN, "model.quantizer.codebook_size=100000000", "--out", "{w}/r"],
        _small_machine,
        "needs about",
    ),
    "train-huge-batch": (
        ["train", *TRAIN, "train.batch_size=1000000000", "--out", "{w}/r"],
        _small_machine,
        "needs about",
    ),
    "encode-huge-size": ([*ENC[:-1], "100000", "--out", "{w}/t.safetensors"], _small_machine, "needs about"),
    "generate-huge-per-class": ([*GEN, "--classes", "0", "--per-class", "100000000"], None, "--per-class"),
    "generate-huge-num": ([*GEN, "--num", "100000000"], None, "--num"),
    # --- integers
    "generate-huge-class": ([*GEN, "--classes", "99999999999999999999"], None, "--classes"),
    "generate-huge-seed": ([*GEN, "--seed", str(2**70)], None, "--seed"),
    "encode-huge-label": ([*ENC, "--labels", "99999999999999999999", "--out", "{w}/t.safetensors"], None, "--labels"),
    "encode-negative-label": ([*ENC, "--labels", "-5", "--out", "{w}/t.safetensors"], None, "--labels"),
    # --- token file metadata against one schema
    "decode-names-a-number": (
        ["decode", "{w}/names_int.safetensors", "--tokenizer", "{w}/tok", "--out", "{w}/d"],
        None,
        "names",
    ),
    "decode-names-numbers": (
        ["decode", "{w}/names_list.safetensors", "--tokenizer", "{w}/tok", "--out", "{w}/d"],
        None,
        "names",
    ),
    "decode-names-nul": (
        ["decode", "{w}/names_nul.safetensors", "--tokenizer", "{w}/tok", "--out", "{w}/d"],
        None,
        "names",
    ),
    "decode-negative-grid": (
        ["decode", "{w}/grid_negative.safetensors", "--tokenizer", "{w}/tok", "--out", "{w}/d"],
        None,
        "layout.grid",
    ),
    # --- overrides, flags and presets
    "train-section-a-number": (["train", *TRAIN, "train=5", "--out", "{w}/r"], None, "expected a mapping"),
    "train-deep-override": (
        ["train", *TRAIN, "model.encoder.ch_mult=" + "[" * 20000 + "]" * 20000, "--out", "{w}/r"],
        None,
        "nests",
    ),
    "train-duplicate-section": (["train", "{w}/twice.yaml", "--out", "{w}/r"], None, "given twice"),
    "train-empty-betas": (
        ["train", *TRAIN, "train.betas=[]", "--out", "{w}/r"],
        None,
        "train.betas",
    ),  # found by the fuzz run
    "train-negative-disc-weight": (
        ["train", *TRAIN, "loss.disc_weight=-1", "--out", "{w}/r"],
        None,
        "loss.disc_weight",
    ),
    "generate-meta-device": ([*GEN, "--device", "meta"], None, "--device meta"),
    "eval-unknown-vtbench-set": (
        ["eval", "--tokenizer", "{w}/tok", "--data", "vtbench-nope", "--metrics", "psnr", "--out", "{w}/e"],
        None,
        "unknown VTBench set",
    ),
    "eval-unknown-fit": (
        ["eval", "--tokenizer", "{w}/tok", "--data", "vtbench-detail", "--fit", "stretch", "--out", "{w}/e"],
        None,
        "--fit",
    ),
    "eval-vtbench-parquet-without-pyarrow": (
        ["eval", "--tokenizer", "{w}/tok", "--data", "{w}/task3-movie-posters", "--metrics", "cer", "--out", "{w}/e"],
        _vtbench_parquet_no_pyarrow,
        "pyarrow",
    ),
    "eval-tokenizer-is-a-gpt": (
        ["eval", "--tokenizer", "{w}/gpt", "--metrics", "psnr", "--out", "{w}/e"],
        None,
        "not a tokenizer",
    ),
    "encode-nan-target": ([*ENC, "--target", "psnr=nan", "--out", "{w}/t.safetensors"], None, "finite"),
    "encode-single-pass-no-head": (
        [*ENC, "--target", "psnr=20", "--single-pass", "--out", "{w}/t.safetensors"],
        None,
        "halting head",
    ),
    "encode-single-pass-no-target": ([*ENC, "--single-pass", "--out", "{w}/t.safetensors"], None, "--target"),
    "encode-nan-weights": (
        ["encode", "--tokenizer", "{w}/tok_nan", "{w}/photo.png", "--size", "32", "--out", "{w}/t.safetensors"],
        None,
        "NaN",
    ),
    # --- shards
    "train-gpt-shards-outside": (
        ["train", "{gpt}", "data.source={w}/shards_outside", "--out", "{w}/r"],
        None,
        "outside its folder",
    ),
    "train-gpt-shards-up": (
        ["train", "{gpt}", "data.source={w}/shards_up", "--out", "{w}/r"],
        None,
        "outside its folder",
    ),
    "train-gpt-shards-million-codes": (
        ["train", "{gpt}", "data.source={w}/shards_million", "--out", "{w}/r"],
        None,
        "layout",
    ),
    # --- messages
    "encode-newline-in-a-name": (
        [*ENC[:3], "{w}/no\nsuch.png", "--size", "32", "--out", "{w}/t.safetensors"],
        None,
        "no\\nsuch",
    ),
    "train-zero-width-level-no-warning": (
        ["train", *TRAIN, "model.encoder.ch_mult=[0]", "--out", "{w}/r"],
        None,
        "model.encoder",
    ),
    "encode-dev-zero": (
        [*ENC[:3], "/dev/zero", "--size", "32", "--out", "{w}/t.safetensors"],
        None,
        "not a regular file",
    ),
    "encode-fifo": (
        [*ENC[:3], "{w}/fifo.png", "--size", "32", "--out", "{w}/t.safetensors"],
        _fifo,
        "not a regular file",
    ),
    "convert-a-vtok-model": (
        ["convert", "--from", "taming-vqgan", "{w}/tok/model.safetensors", "--out", "{w}/c"],
        None,
        "already a vtok model",
    ),
    "convert-zip-bomb": (["convert", "--from", "llamagen-vq", "{w}/bomb.pt", "--out", "{w}/c"], None, "zip bomb"),
    # --- vtok bench
    "bench-out-is-a-file": ([*BENCH, "--out", "{w}/notes.txt"], None, "is a file"),
    "bench-out-is-a-user-folder": ([*BENCH, "--out", "{w}/photos"], None, "not a leaderboard"),
    "bench-no-such-data": ([*BENCH, "--data", "{w}/nowhere", "--out", "{w}/b"], None, "does not exist"),
    "bench-unknown-metric": ([*BENCH[:-1], "psnr,sharpness", "--out", "{w}/b"], None, "unknown metric"),
    "bench-names-miscounted": ([*BENCH, "--name", "a", "--name", "b", "--out", "{w}/b"], None, "--name"),
    "bench-tokenizer-is-a-gpt": (["bench", "--tokenizer", "{w}/gpt", "--out", "{w}/b"], None, "not a tokenizer"),
    "bench-zero-tokens": ([*BENCH, "--tokens", "0", "--out", "{w}/b"], None, "--tokens"),
    "bench-fit-images-not-whole-batches": ([*BENCH, "--fit-images", "100", "--out", "{w}/b"], None, "--fit-images"),
    "bench-reference-ae-hub-id-offline": (
        [*BENCH, "--reference-ae", "nobody/no-such-vae", "--out", "{w}/b"],
        None,
        "cannot load an AutoencoderKL",
    ),
    "bench-reference-ae-is-a-vtok-model": (
        [*BENCH, "--reference-ae", "{w}/tok", "--out", "{w}/b"],
        None,
        "cannot load an AutoencoderKL",
    ),
    # --- pinned protocols
    "eval-unknown-protocol": ([*PROTO[:4], "imagenet", *PROTO[5:]], None, "unknown protocol 'imagenet'"),
    "eval-protocol-data-is-a-file": ([*PROTO[:6], "{w}/photo.png", *PROTO[7:]], None, "is not a folder"),
    "eval-protocol-data-has-no-images": ([*PROTO[:6], "{w}/tok", *PROTO[7:]], None, "holds no images"),
    "eval-protocol-builtin-data": ([*PROTO[:6], "builtin", *PROTO[7:]], None, "needs --data FOLDER"),
    "eval-protocol-not-the-whole-set": (PROTO[:-2], None, "give --count N"),
    "eval-protocol-count-zero": ([*PROTO[:-1], "0"], None, "--count"),
    "eval-protocol-count-over-the-folder": ([*PROTO[:-1], "3"], None, "more than the 2 images"),
    "eval-protocol-no-resolution": (
        [x for x in PROTO if x not in ("--resolution", "32")],
        None,
        "does not state its resolution",
    ),
    "eval-protocol-foreign-metric": ([*PROTO, "--metrics", "text"], None, "'text' is not one of them"),
    "eval-count-without-protocol": (
        ["eval", "--tokenizer", "{w}/tok", "--count", "2", "--out", "{w}/e"],
        None,
        "--count needs --protocol",
    ),
}


@pytest.mark.parametrize("row", list(ROWS))
def test_bad_input_is_one_line_exit_2_and_changes_no_input(row, world, monkeypatch, capsys):
    argv, setup, words = ROWS[row]
    argv = [a.replace("{w}", str(world)).replace("{gpt}", str(ROOT / "configs" / "ar" / "gpt_tiny.yaml")) for a in argv]
    if setup is not None:  # before the snapshot: a setup may damage an input on purpose
        setup(monkeypatch, world)
    before = snapshot(world)
    code, err = run_cli(argv, capsys)
    held = getattr(bad_world, "_held", None)
    monkeypatch.undo()
    if held is not None:
        held.__exit__(None, None, None)
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("vtok: error:")]
    assert code == 2, (row, code, err[-500:])
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert words in lines[0], lines[0]
    assert "Warning" not in err, err  # a refused setting's warnings are noise before the one line
    after = snapshot(world)
    assert {k: v for k, v in after.items() if k in before} == before, f"{row} changed an input file"
    added = [k for k in after if k not in before and k.split("/")[0] in ("tok", "gpt", "photos", "run", "shards")]
    assert not added, f"{row} wrote into a folder it did not make: {added}"


def test_a_bomb_inside_a_folder_is_skipped_and_named(world, monkeypatch, capsys, caplog):
    # PIL refuses images over twice MAX_IMAGE_PIXELS: here 2000 px, so the 50x50 file is the bomb and the
    # 32x32 and 40x48 photographs pass.
    Image.new("RGB", (50, 50)).save(world / "photos" / "z_bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    out = world / "t.safetensors"
    argv = ["encode", "--tokenizer", str(world / "tok"), str(world / "photos"), "--size", "32", "--out", str(out)]
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "z_bomb.png" in caplog.text and "decompression-bomb" in caplog.text
    assert len(load_tokens(out).names) == 2


def test_a_torn_metrics_line_and_stale_temporaries_do_not_stop_a_resume(world, capsys):
    run = world / "run"
    assert run_cli(["train", *TRAIN, "train.save_every=1", "--out", str(run)], capsys)[0] == 0
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "tot')  # power lost mid-line
    stale = run / "checkpoints" / ".step_00000003.abcd.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    code, err = run_cli(["train", *TRAIN, "train.steps=4", "train.save_every=1", "--out", str(run)], capsys)
    assert code == 0, err
    assert not stale.exists()
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_psnr_is_capped_and_reports_are_strict_json(tmp_path):
    from vtok.eval.psnr import psnr_per_image
    from vtok.io import dumps_json

    x = torch.rand(2, 3, 8, 8) * 2 - 1
    y = x.clone()
    y[1] = -y[1]
    values = psnr_per_image(x, y)
    assert values[0] == 100.0 and torch.isfinite(values).all()

    def refuse(token: str):
        raise ValueError(f"non-standard JSON token {token}")

    assert json.loads(dumps_json({"a": float("inf"), "b": [float("nan"), 1.5]}), parse_constant=refuse) == {
        "a": None,
        "b": [None, 1.5],
    }


def test_library_sampling_config_refuses_nonsense():
    from vtok.ar_models.sample import SamplingConfig
    from vtok.errors import VtokError

    for bad in ({"top_p": 2.0}, {"temperature": -1.0}, {"cfg_scale": -3.0}, {"top_k": -5}):
        with pytest.raises(VtokError, match="sampling"):
            SamplingConfig(**bad)


def test_a_large_preset_file_is_refused_before_parsing(tmp_path, capsys):
    big = tmp_path / "big.yaml"
    big.write_text("model: {name: grid}\n" + "# padding\n" * 120_000)
    code, err = run_cli(["train", str(big), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "kB" in err
