"""VTBench's tasks: the built-in sets, the feeds, refusals as table rows, CER/WER and VTBench's folder layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vtok.errors import VtokError
from vtok.eval.evaluate import evaluate
from vtok.eval.page_text import CER, WER, normalize, word_edit_distance
from vtok.eval.vtbench import load_source, prepare
from vtok.eval.vtbench_sets import PAGES_PER_BAND, PRINT_BANDS, SET_NAMES, SETS, builtin_set, page_side


@pytest.mark.parametrize("key", SETS)
def test_every_builtin_set_is_deterministic_and_shaped_for_its_task(key):
    items = builtin_set.__wrapped__(key, 32)
    again = builtin_set.__wrapped__(key, 32)
    assert [i.name for i in items] == [i.name for i in again]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(items, again, strict=True))
    sizes = {i.image.size for i in items}
    if key in ("documents", "posters", "multilingual"):
        assert sizes == {(page_side(32), page_side(32))} and all(i.text for i in items)
    elif key == "varying":
        assert all(w != h and w % 16 == 0 and h % 16 == 0 for w, h in sizes) and len(sizes) == len(items)
    elif key == "highres":
        assert sizes == {(128, 128)}
    else:
        assert sizes == {(32, 32)}


def test_documents_come_in_graded_print_bands():
    items = builtin_set("documents", 64)
    groups = [i.group for i in items]
    assert groups == [g for g in PRINT_BANDS for _ in range(PAGES_PER_BAND)]
    # Larger print fits fewer characters on a page: the bands really differ in size.
    chars = {g: np.mean([len(i.text) for i in items if i.group == g]) for g in PRINT_BANDS}
    assert chars["print_small"] > 1.5 * chars["print_medium"] > 1.5 * 1.2 * chars["print_large"]


def test_multilingual_pages_cover_three_scripts():
    scripts = {i.script for i in builtin_set("multilingual", 64)}
    assert scripts == {"latin", "cyrillic", "greek"}
    text = " ".join(i.text for i in builtin_set("multilingual", 64))
    assert "ж" in text.lower() and "λ" in text.lower() and "ß" in text


def test_feeds_crop_grid_and_tiles():
    image = Image.new("RGB", (70, 45))
    assert prepare(image, "crop", 32, 8).size == (32, 32)
    assert prepare(image, "grid", 32, 8).size == (64, 40)
    assert prepare(image, "native", 32, 8).size == (70, 45)
    assert prepare(image, "tiles", 32, 8).size == (96, 64)


def test_a_grid_tokenizer_takes_non_square_sizes_and_refuses_off_grid_ones_in_one_line(tiny_tokenizer, tmp_path):
    for name, size in (("a", (48, 32)), ("b", (50, 30))):
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
            tmp_path / f"{name}.png"
        )
    folder = tmp_path / "task1-varying-resolution"
    folder.mkdir()
    for f in tmp_path.glob("*.png"):
        f.rename(folder / f.name)
    native = evaluate(["psnr"], data=str(folder), tokenizer=tiny_tokenizer, resolution=32, progress=False)
    assert native.info["fit"] == "native" and native.info["images"] == 1
    assert "30x50" in native.info["refused"] and "multiple" in native.info["refused"]["30x50"]
    assert "\n" not in native.info["refused"]["30x50"]
    grid = evaluate(["psnr"], data=str(folder), tokenizer=tiny_tokenizer, resolution=32, progress=False, fit="grid")
    assert grid.info["images"] == 2 and not grid.info["refused"] and grid.scores["psnr"]["PSNR"] > 0


def test_a_tokenizer_that_refuses_every_size_skips_the_metric_with_the_reason():
    def square_only(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != x.shape[-2]:
            raise VtokError(f"this model takes square images, not {x.shape[-1]}x{x.shape[-2]}")
        return x

    result = evaluate(["psnr", "ssim"], data="vtbench-varying", reconstruct=square_only, resolution=32, progress=False)
    assert not result.scores and "takes square images" in result.skipped["psnr"]
    assert len(result.info["refused"]) == len(builtin_set("varying", 32))


def test_tiles_reconstruct_a_page_at_the_tokenizers_size():
    seen = []

    def record(x: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return x

    result = evaluate(["psnr"], data="vtbench-documents", reconstruct=record, resolution=64, progress=False)
    assert set(seen) == {(16, 3, 64, 64)}  # a 256 px page as 4 x 4 tiles of 64 px
    assert result.scores["psnr"]["PSNR"] == pytest.approx(100.0, abs=1e-6) or result.scores["psnr"]["PSNR"] > 60


def test_word_and_character_error_rates():
    assert normalize("  a \n b\tc ") == "a b c"
    assert word_edit_distance("the cat sat".split(), "the bat sat down".split()) == 2
    cer, wer = CER(), WER()
    readings = {0: "hello world", 1: "hallo world"}
    for metric in (cer, wer):
        metric.read = lambda image: readings[int(image[0, 0, 0] > 0)]
        real, fake = -torch.ones(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
        metric.update(real, fake, texts=["hello world"], scripts=["latin"], groups=["print_small"])
    c, w = cer.compute(), wer.compute()
    assert c["CER"] == pytest.approx(1 / 11) and c["CER_original_truth"] == 0.0 and c["CER_latin"] == c["CER"]
    assert c["CER_print_small"] == c["CER"] and w["WER_print_small"] == w["WER"]
    assert w["WER"] == pytest.approx(1 / 2) and w["WER_vtbench"] == pytest.approx(1 / 2) and w["pages"] == 1
    assert "corpus" in cer.protocol()["reduction"]


def test_vtbench_results_layout_is_scored_from_its_reconstructions(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("original_images", "reconstructed_images"):
        (tmp_path / sub).mkdir()
    for i in range(2):
        a = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        Image.fromarray(a).save(tmp_path / "original_images" / f"{i:08d}.png")
        Image.fromarray(255 - a).save(tmp_path / "reconstructed_images" / f"{i:08d}.png")
    source = load_source(str(tmp_path), 32)
    assert source.fit == "native" and len(source.items) == 2
    result = evaluate(
        ["psnr"], data=str(tmp_path), recon_dir=tmp_path / "reconstructed_images", resolution=32, progress=False
    )
    assert result.info["images"] == 2 and result.scores["psnr"]["PSNR"] < 10


def test_unknown_set_and_fit_are_one_line_errors():
    with pytest.raises(VtokError, match="unknown VTBench set"):
        load_source("vtbench-nope", 32)
    with pytest.raises(VtokError, match="unknown fit"):
        evaluate(["psnr"], data="vtbench-detail", reconstruct=lambda x: x, resolution=32, fit="stretch", progress=False)
    assert "vtbench-documents" in SET_NAMES


@pytest.mark.slow
def test_whole_image_cer_separates_jpeg_quality_10_from_90_on_the_documents():
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install 'vtok[eval]')")
    from vtok.eval.baselines import jpeg

    scores = {}
    for quality in (10, 90):
        result = evaluate(["cer"], data="vtbench-documents", reconstruct=jpeg(quality), resolution=64, progress=False)
        scores[quality] = result.scores["cer"]
    assert scores[90]["CER_original_truth"] < 0.02  # the reader reads the rendered pages
    assert scores[10]["CER"] > 4 * scores[90]["CER"] + 0.005
    assert scores[10]["CER_truth"] > 4 * scores[90]["CER_truth"] + 0.005
    # JPEG's damage is in the small print, where the page-level score comes from.
    assert scores[10]["CER_print_small"] > scores[90]["CER_print_small"] + 0.015


@pytest.mark.slow
def test_the_print_bands_grade_what_a_blur_keeps():
    pytest.importorskip("rapidocr", reason="rapidocr is not installed (pip install 'vtok[eval]')")

    def halve(x):  # box-average to half the resolution and back: small print blurs first
        return torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(x, 2), scale_factor=2, mode="bilinear")

    cer = evaluate(["cer"], data="vtbench-documents", reconstruct=halve, resolution=64, progress=False).scores["cer"]
    assert cer["CER_print_small"] > cer["CER_print_medium"] + 0.03
    assert cer["CER_print_small"] > cer["CER_print_large"] + 0.03
