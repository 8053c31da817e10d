"""Text and face fidelity, the built-in detail set and `vtok eval` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageFilter

from vtok.cli import main
from vtok.eval.baselines import downscale, identity
from vtok.eval.text import edit_distance, normalized_edit_similarity

pytest.importorskip("rapidocr", reason="the eval extra is not installed")
pytest.importorskip("dlib", reason="the eval extra is not installed")


def test_edit_distance_and_ned_on_known_strings():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3
    assert normalized_edit_similarity("Hotel", "Hotel") == 1.0
    assert normalized_edit_similarity("Hotel", "hotel") == pytest.approx(0.8)  # case counts
    assert normalized_edit_similarity("abcd", "ab") == pytest.approx(0.5)
    assert normalized_edit_similarity("ab", "") == 0.0


@pytest.fixture(scope="module")
def detail_set(tmp_path_factory):
    from vtok.eval.detail_set import make_detail_set

    return make_detail_set(tmp_path_factory.mktemp("d") / "set", 256, text_images=3, face_images=2, seed=1)


def test_detail_set_layout_and_bins(detail_set):
    from vtok.eval.annotations import read_face_annotations, read_text_annotations
    from vtok.eval.bins import FACE_EDGES, TEXT_EDGES, bin_index

    texts = read_text_annotations(detail_set / "annotations" / "text_builtin.json")
    faces = read_face_annotations(detail_set / "annotations" / "face_meta.json")
    word_bins = {bin_index(w.ratio, TEXT_EDGES[256]) for t in texts for w in t.annotations}
    face_bins = {bin_index(f.ratio, FACE_EDGES[256]) for i in faces for f in i.faces}
    assert {0, 1, 2} <= word_bins and {0, 1, 2} <= face_bins
    assert all(len(f.kps) == 5 for i in faces for f in i.faces)


def test_text_fidelity_separates_identity_from_downscaling(detail_set):
    from vtok.eval.text import build_recognizer
    from vtok.eval.tokbench import run_tokbench

    rec = build_recognizer("rapidocr")
    same, _ = run_tokbench(detail_set, 256, identity(), rec, None, progress=False)
    blurred, _ = run_tokbench(detail_set, 256, downscale(4), rec, None, progress=False)
    s, b = same.compute(), blurred.compute()
    assert s["words_scored"] >= 6 and s["T-ACC_mean"] > 0.8
    assert b["T-NED_mean"] < s["T-NED_mean"] - 0.2


def test_face_identity_is_exact_for_itself_and_drops_under_blur(detail_set):
    from vtok.eval.annotations import read_face_annotations
    from vtok.eval.face import build_embedder

    emb = build_embedder("dlib")
    item = read_face_annotations(detail_set / "annotations" / "face_meta.json")[0]
    image = Image.open(detail_set / "images" / "face_data" / "builtin_faces" / item.image_name).convert("RGB")
    face = max(item.faces, key=lambda f: f.ratio)
    assert emb.compare(image, image, face) == pytest.approx(0.0, abs=1e-6)
    assert emb.compare(image, image.filter(ImageFilter.GaussianBlur(6)), face) > 0.3


def test_vtok_eval_report(tmp_path, tiny_tokenizer, capsys):
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    out = tmp_path / "report"
    argv = ["eval", "--tokenizer", str(tmp_path / "tok"), "--metrics", "psnr,ssim,codebook,lpips"]
    assert main([*argv, "--resolution", "32", "--batch-size", "16", "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    positions = tiny_tokenizer.encode(torch.zeros(1, 3, 32, 32)).num_positions
    assert report["scores"]["codebook"]["tokens_per_image"] == positions
    assert 0 < report["scores"]["codebook"]["usage"] <= 1
    assert report["setting"]["images"] == 52
    assert "lpips" in report["skipped"] or "lpips" in report["scores"]
    assert "protocol" in report and "ssim" in report["protocol"]
    assert (out / "results.md").is_file() and (out / "recon_grid.png").is_file()


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert err.startswith("vtok: error: ") and "Traceback" not in err
    return err


def test_vtok_eval_bad_input(tmp_path, capsys):
    recon = tmp_path / "recon"
    recon.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    Image.new("RGB", (40, 40)).save(data / "a.png")
    base = ["eval", "--recon", str(recon), "--out", str(tmp_path / "r"), "--resolution", "32"]
    assert "no reconstruction for a.png" in _error(capsys, [*base, "--data", str(data), "--metrics", "psnr"])
    Image.new("RGB", (17, 17)).save(recon / "a.png")
    assert "expected 32x32" in _error(capsys, [*base, "--data", str(data), "--metrics", "psnr"])
    assert "unknown metric 'fid'" in _error(capsys, [*base, "--metrics", "fid"])
    (tmp_path / "empty").mkdir()
    assert "no images found in" in _error(capsys, [*base, "--data", str(tmp_path / "empty"), "--metrics", "psnr"])
    assert "does not exist" in _error(capsys, [*base, "--data", str(tmp_path / "missing"), "--metrics", "psnr"])
    assert "not in TokBench's layout" in _error(capsys, [*base, "--data", str(data), "--metrics", "text"])
    assert "exactly one" in _error(capsys, ["eval", "--out", str(tmp_path / "r")])


class _PrefixTokenizer:
    """A stand-in variable-length tokenizer: k tokens keep a (k/16)-share of the resolution."""

    def encode(self, x, num_tokens=None):
        return (x, num_tokens or 16)

    def decode(self, tokens):
        x, k = tokens
        factor = max(1, 16 // k)
        return downscale(factor)(x)


def test_rate_distortion_rows_and_plot(tmp_path):
    from vtok.eval.rate import rate_distortion, write_rate_distortion

    rows = rate_distortion(_PrefixTokenizer(), [4, 16, 8], ["psnr", "ssim"], resolution=32, progress=False)
    assert [r["tokens"] for r in rows] == [4, 8, 16]
    assert rows[0]["PSNR"] < rows[1]["PSNR"] and rows[2]["PSNR"] == 100.0  # identical: the cap
    write_rate_distortion(rows, tmp_path, "prefix")
    assert (tmp_path / "rate_distortion.png").stat().st_size > 0


@pytest.mark.slow  # a Frechet distance of 2048-d features: ~1 min on 2 cores
def test_vtok_eval_gfid_against_a_folder_and_npz(tmp_path, capsys):
    from vtok.builtin import builtin_crops

    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i, (_, image) in enumerate(builtin_crops("heldout", 64)[:6]):
        image.save(gen / f"{i}.png")
        image.save(ref / f"{i}.png")
    out = tmp_path / "r"
    base = ["eval", "--recon", str(gen), "--metrics", "gfid", "--resolution", "64", "--out", str(out)]
    assert main([*base, "--reference", str(ref)]) == 0
    assert abs(json.loads((out / "results.json").read_text())["scores"]["gfid"]["gFID"]) < 1e-3
    base_fd = [*base[:4], "gfd_effnet_lite0", *base[5:]]
    assert main([*base_fd, "--reference", str(ref)]) == 0
    assert abs(json.loads((out / "results.json").read_text())["scores"]["gfd_effnet_lite0"]["gFD_effnet_lite0"]) < 1e-3
    assert "needs the generated images" in _error(capsys, base)
