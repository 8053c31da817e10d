"""The command line: encode/decode/reconstruct round trip and one-line errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.cli import main
from vtok.tokens import load_tokens, save_tokens


@pytest.fixture
def tok_dir(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    return tmp_path / "tok"


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 255, (36, 36), dtype=np.uint8)).save(folder / "sub" / "b.jpg")
    return folder


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # after any progress bar
    assert err.startswith("vtok: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_encode_decode_round_trip(tok_dir, image_dir, tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    assert (
        main(
            [
                "encode",
                "--tokenizer",
                str(tok_dir),
                str(image_dir),
                "--size",
                "32",
                "--labels",
                "4,5",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    f = load_tokens(out)
    assert f.tokens.ids.shape == (2, 64, 1) and f.labels.tolist() == [4, 5]
    assert main(["decode", str(out), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "dec")]) == 0
    pngs = sorted((tmp_path / "dec").glob("*.png"))
    assert len(pngs) == 2
    with Image.open(pngs[0]) as image:
        assert image.size == (32, 32)
    assert (
        main(
            ["reconstruct", "--tokenizer", str(tok_dir), str(image_dir), "--size", "32", "--out", str(tmp_path / "rec")]
        )
        == 0
    )
    assert "mean" in capsys.readouterr().out
    assert (tmp_path / "rec" / "psnr.json").is_file()


def test_missing_and_corrupt_images(tok_dir, tmp_path, capsys):
    assert "no such file" in _error(
        capsys, ["encode", "--tokenizer", str(tok_dir), str(tmp_path / "nope.png"), "--out", str(tmp_path / "x")]
    )
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    assert "cannot read image" in _error(
        capsys, ["encode", "--tokenizer", str(tok_dir), str(bad), "--out", str(tmp_path / "x")]
    )


def test_token_file_from_another_tokenizer(tok_dir, image_dir, tmp_path, capsys):
    out = tmp_path / "t.safetensors"
    main(["encode", "--tokenizer", str(tok_dir), str(image_dir), "--size", "32", "--out", str(out)])
    other = vtok.load(tok_dir)
    with torch.no_grad():
        other.decoder.conv_out.weight.add_(0.1)
    other.save_pretrained(tmp_path / "other")
    assert "another tokenizer" in _error(
        capsys, ["decode", str(out), "--tokenizer", str(tmp_path / "other"), "--out", str(tmp_path / "d")]
    )


def test_ids_out_of_range(tok_dir, tiny_tokenizer, images, tmp_path, capsys):
    tokens = tiny_tokenizer.encode(images)
    tokens.ids[1, 3, 0] = 10_000
    save_tokens(tmp_path / "t.safetensors", tokens, tiny_tokenizer.fingerprint())
    err = _error(
        capsys, ["decode", str(tmp_path / "t.safetensors"), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "d")]
    )
    assert "outside codebook" in err


def test_wrong_checkpoint_and_config(tmp_path, capsys, image_dir):
    assert "not a vtok model folder" in _error(
        capsys, ["encode", "--tokenizer", str(image_dir), str(image_dir), "--out", str(tmp_path / "x")]
    )
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "config.json").write_text('{"format_version": 1, "kind": "model", "model": {"name": "grid"}}')
    (junk / "model.safetensors").write_bytes(b"\x00" * 16)
    assert "safetensors" in _error(
        capsys, ["encode", "--tokenizer", str(junk), str(image_dir), "--out", str(tmp_path / "x")]
    )
    err = _error(
        capsys, ["train", "configs/tokenizer/vq_tiny.yaml", "model.quantizer.bogus=1", "--out", str(tmp_path / "r")]
    )
    assert "model.quantizer.bogus" in err
    assert "config file not found" in _error(
        capsys, ["train", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "r")]
    )


def test_token_file_that_is_not_one(tok_dir, tmp_path, capsys):
    bad = tmp_path / "t.safetensors"
    bad.write_text("hello")
    assert "not a token file" in _error(
        capsys, ["decode", str(bad), "--tokenizer", str(tok_dir), "--out", str(tmp_path / "d")]
    )


def test_integer_lists_and_adaptive_targets_fail_in_one_line(tok_dir, image_dir, tmp_path, capsys):
    out = str(tmp_path / "t.safetensors")
    assert "--labels takes comma-separated integers" in _error(
        capsys, ["encode", "--tokenizer", str(tok_dir), str(image_dir), "--size", "32", "--labels", "a,b", "--out", out]
    )
    assert "needs a variable-length 1D tokenizer" in _error(
        capsys,
        ["encode", "--tokenizer", str(tok_dir), str(image_dir), "--size", "32", "--target", "psnr=20", "--out", out],
    )


def test_a_reader_that_goes_away_stops_the_command_quietly():
    """`vtok presets | head`: the pipe closes before vtok writes; no error line, SIGPIPE's status."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "vtok.cli", "presets"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # before vtok has imported, so its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait() == 141 and err == "", err


def test_a_command_leaves_no_process_group_behind(tmp_path, capsys):
    """Every rank tears torch.distributed down itself: a gloo group left to interpreter shutdown can abort."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["presets"]) == 0
        assert not dist.is_initialized()
        assert main(["presets"]) == 0  # and a command without a group does not try to leave one
    finally:
        if dist.is_initialized():  # never leak a group into the rest of the session
            dist.destroy_process_group()
