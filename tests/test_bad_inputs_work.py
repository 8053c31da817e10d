"""Issue 29: what must keep working beside the refusals of ``test_bad_inputs.py`` (same world)."""

from __future__ import annotations

import json
import shutil

from PIL import Image

from tests.bad_world import _newest_checkpoint, _pickled_optim
from tests.test_bad_inputs import ENC, TINY, TRAIN, run_cli, template, world  # noqa: F401  (fixtures)


def test_a_stale_lock_is_taken_over_and_the_fallback_resumes(world, capsys):  # noqa: F811 (the fixture)
    run = world / "run"
    (run / ".vtok-lock").write_text("999999999\n")  # left by a killed run: no process holds it
    _pickled_optim(None, world)
    code, err = run_cli(["train", *TRAIN, "train.save_every=1", "--out", str(run)], capsys)
    assert code == 2 and "delete" in err and "step_00000001" in err, err
    shutil.rmtree(_newest_checkpoint(world))  # the documented fallback: delete the damaged checkpoint
    code, err = run_cli(["train", *TRAIN, "train.save_every=1", "--out", str(run)], capsys)
    assert code == 0, err
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000002"


def test_a_strip_image_is_encoded_in_little_memory(world, capsys):  # noqa: F811 (the fixture)
    import tracemalloc

    Image.new("RGB", (1_000_000, 1), (10, 200, 30)).save(world / "strip.png")
    tracemalloc.start()
    code, err = run_cli([*[a.replace("{w}", str(world)) for a in ENC[:3]], str(world / "strip.png"), "--size", "32",
                         "--out", str(world / "t.safetensors")], capsys)  # fmt: skip
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert code == 0, err
    assert peak < 200 << 20, peak  # resizing the whole strip to cover 32 px took 3 GB


def test_reconstruct_rows_of_inputs_with_one_base_name_stay_distinct(world, capsys):  # noqa: F811 (the fixture)
    (world / "more").mkdir()
    shutil.copy(world / "photos" / "a.png", world / "more" / "a.png")
    argv = ["reconstruct", "--tokenizer", str(world / "tok"), str(world / "photos"), str(world / "more"),
            "--size", "32", "--out", str(world / "r")]  # fmt: skip
    assert run_cli(argv, capsys)[0] == 0
    rows = json.loads((world / "r" / "psnr.json").read_text())["psnr_db"]
    assert len(rows) == 4  # three images and the mean


def test_overrides_come_before_or_after_the_options(world, capsys):  # noqa: F811 (the fixture)
    argv = ["train", str(TINY), "--overlay", str(world / "overlay.yaml"), *TRAIN[1:], "--out", str(world / "r")]
    code, err = run_cli(argv, capsys)
    assert code == 0, err
    cfg = json.loads((world / "r" / "config.json").read_text())
    assert cfg["train"]["steps"] == 2 and cfg["train"]["lr"] == 2.0e-3


def test_generate_replaces_its_own_grid_and_nothing_else(world, capsys):  # noqa: F811 (the fixture)
    argv = ["generate", "--model", str(world / "gpt"), "--tokenizer", str(world / "tok"), "--classes", "0",
            "--per-class", "1", "--out", str(world / "g.png")]  # fmt: skip
    assert run_cli(argv, capsys)[0] == 0
    assert run_cli(argv, capsys)[0] == 0  # its own grid and token file: replaced
    (world / "g.png").write_bytes((world / "photo.png").read_bytes())  # the user put a photograph there
    code, err = run_cli(argv, capsys)
    assert code == 2 and "not a" in err
