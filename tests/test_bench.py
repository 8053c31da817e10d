"""``vtok bench``: the leaderboard's rows, rates, refusals and files, on tiny untrained tokenizers at 32 px."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import vtok
from vtok.cli import main
from vtok.eval.evaluate import evaluate
from vtok.eval.leaderboard import Bench, score
from vtok.eval.leaderboard_methods import Method, classic_layout, codec_rates, token_bits, tokenizer_methods

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs" / "tokenizer"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny VQ (f4, 64 codes: 64 positions x 6 bits at 32 px), a tiny 1D tokenizer (up to 8 tokens of 64
    codes, 32 px only) and a tiny randomly initialised diffusers AutoencoderKL, saved as a user would."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vtok.build(PRESETS / "vq_tiny.yaml").save_pretrained(root / "vq")
    vtok.build(PRESETS / "oned_tiny.yaml").save_pretrained(root / "oned")
    diffusers = pytest.importorskip("diffusers", reason="the reference row needs diffusers")
    diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    ).save_pretrained(root / "ae")
    return root


def test_bits_per_image_are_positions_times_code_bits(models):
    probe = torch.zeros(1, 3, 32, 32)
    vq, oned = vtok.load(models / "vq"), vtok.load(models / "oned")
    assert token_bits(vq, probe) == (8 * 8 * 6, 64)
    assert token_bits(oned, probe, 4) == (4 * 6, 4)  # a 1D tokenizer spends only its valid prefix


def test_a_refused_resolution_is_a_reason_row_not_a_crash(models):
    oned = vtok.load(models / "oned")
    rows = tokenizer_methods("oned", oned, "fp", torch.zeros(1, 3, 64, 64), None)
    assert len(rows) == 1 and rows[0].reconstruct is None
    assert rows[0].reason.startswith("cannot take 64x64 images") and "\n" not in rows[0].reason
    row = score(rows[0], "builtin", Bench(["psnr"], 64, models / "unused"))
    assert "scores" not in row and row["reason"] == rows[0].reason


def test_variable_length_rows_are_a_curve_over_budgets(models):
    oned = vtok.load(models / "oned")
    rows = tokenizer_methods("oned", oned, "fp", torch.zeros(1, 3, 32, 32), None)
    assert [r.tokens for r in rows] == [2, 4, 8] and {r.curve for r in rows} == {"oned"}
    assert [r.bits for r in rows] == [12, 24, 48]
    rates = codec_rates(rows)
    assert [bits for bits, _, _ in rates] == [48, 24, 12]


def test_classic_vq_takes_a_grid_tokenizers_own_layout_or_whole_bits_per_patch():
    native = {"grid": [8, 8], "multi_scale": False, "codebook_sizes": [64]}
    assert classic_layout(384, 32, native) == (4, 64, 1)
    rq = {"grid": [8, 8], "multi_scale": False, "codebook_sizes": [1024] * 4}
    assert classic_layout(64 * 40, 64, rq) == (8, 1024, 4)
    for bits, size in ((48, 32), (160, 64), (320, 64), (1152, 64)):
        patch, k, depth = classic_layout(bits, size)
        assert (size // patch) ** 2 * depth * math.log2(k) == bits and k <= 1024


def test_the_reference_autoencoder_row_is_continuous(models):
    from vtok.eval.reference_ae import autoencoder_reconstruct, load_autoencoder_kl

    ae = load_autoencoder_kl(str(models / "ae"))
    method = Method("ae", "reference", "ae", autoencoder_reconstruct(ae), None, key="ae")
    row = score(method, "builtin", Bench(["psnr"], 32, models / "ref_out", crops=2))
    assert row["bits"] is None and math.isfinite(row["scores"]["PSNR"])
    assert len(row["crops"]) == 2 and (models / "ref_out" / row["crops"][0]).is_file()


@pytest.mark.slow
def test_bench_writes_every_output_and_agrees_with_vtok_eval(models, tmp_path, capsys):
    out = tmp_path / "board"
    argv = ["bench", "--tokenizer", str(models / "vq"), "--tokenizer", str(models / "oned"), "--resolution", "32"]
    argv += ["--metrics", "psnr,ssim", "--crops", "3", "--reference-ae", str(models / "ae"), "--out", str(out)]
    argv += ["--fit-images", "256"]  # a quarter of the default: the codecs' rows are checked, not their quality
    assert main(argv) == 0
    for name in ("leaderboard.json", "leaderboard.md", "rate_distortion.png", "leaderboard.html"):
        assert (out / name).is_file(), name
    report = json.loads((out / "leaderboard.json").read_text())
    rows = {r["method"]: r for r in report["sets"]["builtin"]["rows"]}
    # The same PSNR as vtok eval of the same model on the same set.
    alone = evaluate(["psnr"], "builtin", tokenizer=vtok.load(models / "vq"), resolution=32, progress=False)
    assert rows["vq"]["scores"]["PSNR"] == pytest.approx(alone.scores["psnr"]["PSNR"], abs=1e-6)
    assert [rows[f"oned @{k}"]["bits"] for k in (2, 4, 8)] == [12, 24, 48]
    # The codecs at the tokenizer's bits: classic VQ exactly, JPEG/WebP aiming at the same bytes.
    assert rows["classic_vq @ vq"]["bits"] == 384 and rows["classic_vq @ oned @8"]["bits"] == 48
    jpeg = rows["jpeg @ vq"]
    assert jpeg["target_bits"] == 384 and jpeg["bits"] >= 384 and jpeg["at_floor"]  # no 32 px JPEG fits 48 bytes
    assert "jpeg @ oned @8" not in rows  # a lower rate at the same smallest files is the same row, stated once
    assert rows["ae"]["bits"] is None and "PSNR" in rows["ae"]["scores"]
    table = (out / "leaderboard.md").read_text()
    assert "| vq | 384 |" in table and "| ae | continuous |" in table
    page = (out / "leaderboard.html").read_text()
    assert all((out / r["crops"][0]).is_file() for r in rows.values()) and rows["vq"]["crops"][0] in page
    # A second run into the same folder reuses every scored row.
    assert main(argv) == 0
    again = json.loads((out / "leaderboard.json").read_text())
    assert [r["seconds"] for r in again["sets"]["builtin"]["rows"]] == [r["seconds"] for r in rows.values()]


@pytest.mark.slow
def test_vtbench_sets_give_reason_rows_and_codecs_at_bits_per_area(models, tmp_path):
    from vtok.eval.leaderboard import run_leaderboard

    tokenizers = [(n, vtok.load(models / n), n) for n in ("vq", "oned")]
    bench = Bench(["psnr"], 32, tmp_path / "board", crops=1, progress=False, fit_images=256)
    report = run_leaderboard(tokenizers, ["vtbench-varying"], bench, [8])
    rows = {r["method"]: r for r in report["sets"]["vtbench-varying"]["rows"]}
    # The 1D tokenizer takes 32x32 only: its row says why; the grid tokenizer and the codecs code every aspect.
    assert "scores" not in rows["oned @8"] or not rows["oned @8"]["scores"]
    assert rows["oned @8"]["reason"].startswith("cannot take")
    assert math.isfinite(rows["vq"]["scores"]["PSNR"]) and math.isfinite(rows["classic_vq @ vq"]["scores"]["PSNR"])
    # JPEG's budget grows with each image's area, and its rate is stated per 32 x 32 pixels.
    assert rows["jpeg @ vq"]["bits"] >= 384
    assert "| oned @8 | 48 | not scored: cannot take" in (tmp_path / "board" / "leaderboard.md").read_text()


def test_classic_vq_is_fitted_on_the_stream_vtok_demo_fits_it_on():
    from vtok.cli.demo import DEMO_PRESET
    from vtok.eval.baselines import training_stream
    from vtok.eval.leaderboard_methods import FIT_PRESET, fit_data

    assert FIT_PRESET == DEMO_PRESET
    demo = vtok.load_config(DEMO_PRESET)
    assert fit_data()["color_jitter"] == demo["data"]["color_jitter"]  # the jitter is part of the stream
    ours = training_stream({**fit_data(), "image_size": 32}, 0, 16)
    theirs = training_stream({**demo["data"], "image_size": 32}, demo["train"]["seed"], 16)
    assert torch.equal(ours, theirs)
