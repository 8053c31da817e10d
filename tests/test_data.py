"""Images at the edges: modes, ADM crop, the built-in set, resumable batch order."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from vtok.builtin import builtin_crops, photo_names
from vtok.data import DataConfig, iterate_batches, make_dataset
from vtok.errors import VtokError
from vtok.images import center_crop_arr, load_image, make_grid, pil_to_tensor, to_uint8


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "LA"])
def test_modes_become_rgb(mode, tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image = (
        Image.fromarray(arr).convert(mode) if mode != "I;16" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    )
    ext = "tif" if mode in ("CMYK", "I;16") else "png"
    image.save(tmp_path / f"x.{ext}")
    out = load_image(tmp_path / f"x.{ext}")
    assert out.mode == "RGB" and out.size == (30, 20)
    if mode == "I;16":  # 16-bit is rescaled, not clipped
        assert abs(np.asarray(out)[..., 0].astype(int) - arr[..., 0]).max() <= 1


def test_rgba_composites_on_white(tmp_path):
    Image.new("RGBA", (4, 4), (255, 0, 0, 0)).save(tmp_path / "t.png")
    assert np.asarray(load_image(tmp_path / "t.png"))[0, 0].tolist() == [255, 255, 255]


def test_center_crop_sizes():
    assert center_crop_arr(Image.new("RGB", (1000, 300)), 64).size == (64, 64)
    assert center_crop_arr(Image.new("RGB", (20, 30)), 64).size == (64, 64)  # small images are upscaled


def test_tensor_round_trip_is_exact():
    arr = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    t = pil_to_tensor(Image.fromarray(arr))
    assert t.min() >= -1 and t.max() <= 1
    assert torch.equal(to_uint8(t).permute(1, 2, 0), torch.from_numpy(arr))


def test_grid_shape():
    assert make_grid(torch.zeros(5, 3, 8, 8), ncol=3, pad=2).shape == (3, 2 * 10 + 2, 3 * 10 + 2)


def test_builtin_split_is_disjoint_and_deterministic():
    assert not set(photo_names("train")) & set(photo_names("heldout"))
    a, b = builtin_crops("heldout", 32), builtin_crops("heldout", 32)
    assert [n for n, _ in a] == [n for n, _ in b]
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for (_, x), (_, y) in zip(a, b))
    with pytest.raises(VtokError):
        builtin_crops("nope", 32)


def test_batches_resume_at_any_step():
    cfg = DataConfig(image_size=16)
    full = iterate_batches(cfg, 8, seed=3)
    reference = [next(full) for _ in range(30)]  # crosses an epoch boundary (195 crops / 8)
    resumed = iterate_batches(cfg, 8, seed=3, start_step=23)
    for i in range(23, 30):
        assert torch.equal(next(resumed), reference[i])


def test_random_windows_never_repeat_and_resume_exactly():
    cfg = DataConfig(image_size=16, crop_scale=[0.2, 1.0], random_flip=False)
    batches = list(itertools.islice(iterate_batches(cfg, 8, seed=0), 50))  # two epochs of the 182-slot set
    crops = torch.cat(batches).flatten(1)
    assert crops.shape == (400, 3 * 16 * 16) and torch.unique(crops, dim=0).shape[0] == 400
    resumed = iterate_batches(cfg, 8, seed=0, start_step=40)
    assert torch.equal(next(resumed), batches[40])
    fixed = {tuple(pil_to_tensor(im).flatten().tolist()) for _, im in builtin_crops("train", 16)}
    assert sum(tuple(c.tolist()) in fixed for c in crops) < 5  # not the fixed windows again


@pytest.mark.parametrize(
    "kwargs",
    [
        {"crop_scale": [0.5]},
        {"crop_scale": [0.0, 1.0]},
        {"crop_scale": [0.8, 0.5]},
        {"crop_scale": [0.5, 1.0], "random_crop": True},
        {"color_jitter": [0.4, 0.4, 0.4]},
        {"color_jitter": [1.0, 0.4, 0.4, 0.1]},
        {"color_jitter": [0.4, -0.1, 0.4, 0.1]},
        {"color_jitter": [0.4, 0.4, 0.4, 0.6]},
    ],
)
def test_bad_augmentation_is_a_clear_error(kwargs):
    with pytest.raises(VtokError, match=next(iter(kwargs))):
        DataConfig(**kwargs)


def test_color_jitter_recolours_reproducibly():
    plain = make_dataset(DataConfig(image_size=16, random_flip=False), seed=0)
    cfg = DataConfig(image_size=16, random_flip=False, color_jitter=[0.4, 0.4, 0.4, 0.1])
    jittered = make_dataset(cfg, seed=0)
    a = torch.stack([jittered[(0, i)] for i in range(20)])
    b = torch.stack([plain[(0, i)] for i in range(20)])
    assert a.shape == b.shape and a.min() >= -1 and a.max() <= 1
    # Every sample is recoloured, each differently: its mean colour moves by a different amount.
    shift = (a.mean((2, 3)) - b.mean((2, 3))).abs().sum(1)
    assert (shift > 1e-3).all() and shift.std() > 1e-2
    assert torch.equal(a, torch.stack([jittered[(0, i)] for i in range(20)]))  # a pure function of (seed, epoch, i)
    assert not torch.equal(a[0], jittered[(1, 0)])  # and new each epoch


def test_held_out_images_are_never_augmented():
    cfg = DataConfig(image_size=16, crop_scale=[0.2, 0.5], random_flip=True, color_jitter=[0.4, 0.4, 0.4, 0.1])
    held_out = make_dataset(cfg, seed=0, split="heldout")
    expected = [pil_to_tensor(im) for _, im in builtin_crops("heldout", 16)]
    assert len(held_out) == len(expected)
    assert all(torch.equal(held_out[(e, i)], expected[i]) for e in (0, 1) for i in range(len(expected)))


def test_ranks_see_different_samples():
    cfg = DataConfig(image_size=16, random_flip=False)
    a = next(iterate_batches(cfg, 4, seed=0, rank=0, world_size=2))
    b = next(iterate_batches(cfg, 4, seed=0, rank=1, world_size=2))
    assert not torch.equal(a, b)


def test_unreadable_files_in_a_folder_are_skipped(tmp_path, caplog):
    Image.new("RGB", (20, 20), (10, 20, 30)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"garbage")
    cfg = DataConfig(source=str(tmp_path), image_size=16, random_flip=False)
    batch = next(iterate_batches(cfg, 2, seed=0))
    assert batch.shape == (2, 3, 16, 16)
    assert "bad.png" in caplog.text
