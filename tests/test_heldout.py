"""The one held-out scoring the demo and the benchmarks share, and the classic baseline's fitting images."""

from __future__ import annotations

import pytest
import torch

from vtok.builtin import builtin_crops
from vtok.eval.baselines import classic_scores, classic_vq_scores, training_stream
from vtok.eval.heldout import Reconstruction, crops, mean_psnr, named_crops, reconstruct
from vtok.eval.psnr import psnr_per_image
from vtok.images import pil_to_tensor

from .conftest import TINY


def test_named_crops_are_the_builtin_crops_as_one_tensor():
    names, images = named_crops("heldout", 16)
    expected = builtin_crops("heldout", 16)
    assert names == [n for n, _ in expected]
    assert torch.equal(images, torch.stack([pil_to_tensor(im) for _, im in expected]))
    assert torch.equal(crops("heldout", 16), images)


def test_reconstruct_scores_what_one_batch_of_encode_and_decode_gives(tiny_tokenizer):
    images = crops("heldout", 32)[:20]  # batches of 8: two full and one of 4
    held = reconstruct(tiny_tokenizer, images, batch_size=8)
    with torch.no_grad():
        tokens = tiny_tokenizer.encode(images)
        recon = tiny_tokenizer.decode(tokens)
    assert torch.equal(held.tokens.ids, tokens.ids)
    assert torch.allclose(held.recon, recon, atol=1e-5)
    assert held.psnr() == pytest.approx(float(psnr_per_image(images, recon).double().mean()), abs=1e-4)
    assert held.codes_used() == len(torch.unique(tokens.ids))
    assert torch.allclose(held.color_error(), (recon - images).mean((0, 2, 3)), atol=1e-5)


def test_a_reconstruction_without_tokens_has_psnr_but_no_codes():
    images = crops("heldout", 16)[:4]
    rec = Reconstruction(images, images.flip(-1))
    assert rec.psnr() == mean_psnr(images, images.flip(-1)) < 100
    with pytest.raises(ValueError, match="without tokens"):
        rec.codes_used()


def test_training_stream_is_the_presets_first_images_in_batches_of_16():
    import vtok

    data = vtok.load_config(TINY)["data"]
    stream = training_stream(data, seed=0, count=32)
    assert stream.shape == (32, 3, data["image_size"], data["image_size"])
    assert torch.equal(stream, training_stream(data, seed=0, count=32))
    assert not torch.equal(stream, training_stream(data, seed=1, count=32))
    with pytest.raises(ValueError, match="batches of 16"):
        training_stream(data, seed=0, count=20)


def test_classic_scores_round_the_classic_vq_rows_of_classic_vq_scores():
    images = crops("train", 16)[:64]
    splits = {"x": images}
    exact = classic_vq_scores(4, 8, 2, images, splits)
    rounded = classic_scores(4, 8, 2, images, splits)
    for name in ("classic_vq", "classic_vq_d1"):
        assert rounded[name]["x"] == round(exact[name]["x"], 3)
        assert rounded[name]["bits"] == exact[name]["bits"]
    assert exact["classic_vq_d1"]["x"] < exact["classic_vq"]["x"]  # the second level codes what the first left
