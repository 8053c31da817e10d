"""Reference codecs every score is read against.

Fixed ones (identity, downscale-upscale, JPEG at a quality) are reconstruct functions
(B, 3, H, W) in [-1, 1] -> same shape, usable wherever a tokenizer's
``decode(encode(x))`` is. The classic codecs at a tokenizer's bits (:class:`ClassicVQ`,
:class:`BlockMeans`, :func:`codec_at_bytes`) are what a trained tokenizer must beat; they
are fitted on the images a tokenizer trains on (:func:`training_stream`).
"""

from __future__ import annotations

import io
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from PIL import Image

from vtok.data import DataConfig, iterate_batches
from vtok.eval.heldout import mean_psnr
from vtok.images import pil_to_tensor, tensor_to_pil


def identity() -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x.clone()


def downscale(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Bicubic down by ``factor`` and back up (PIL, on 8-bit images)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = []
        for img in x:
            pil = tensor_to_pil(img)
            small = pil.resize((max(1, pil.width // factor), max(1, pil.height // factor)), Image.BICUBIC)
            out.append(pil_to_tensor(small.resize(pil.size, Image.BICUBIC)))
        return torch.stack(out)

    return run


def jpeg(quality: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """JPEG round trip at ``quality`` (PIL, 4:2:0 chroma subsampling as its default)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = [_decoded(encoded(tensor_to_pil(img), "JPEG", quality)) for img in x]
        return torch.stack(out)

    return run


BASELINES: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
    "identity": identity,
    "downscale_x2": lambda: downscale(2),
    "downscale_x4": lambda: downscale(4),
    "jpeg_q90": lambda: jpeg(90),
    "jpeg_q50": lambda: jpeg(50),
    "jpeg_q10": lambda: jpeg(10),
}


# --- classic codecs at a tokenizer's bits ------------------------------------------------------------------------


def patches_of(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B * H/p * W/p, 3*p*p) raw RGB patches, raster order within each image."""
    return rearrange(images, "b c (h p) (w q) -> (b h w) (c p q)", p=patch, q=patch)


def from_patches(patches: torch.Tensor, batch: int, height: int, patch: int) -> torch.Tensor:
    """The inverse of :func:`patches_of`."""
    h = height // patch
    return rearrange(patches, "(b h w) (c p q) -> b c (h p) (w q)", b=batch, h=h, c=3, p=patch, q=patch)


def _kmeans(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    # scikit-learn's Lloyd k-means (k-means++ init); a fit is seconds at these sizes.
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    if len(points) < k:
        raise ValueError(f"k-means with {k} centroids needs at least {k} points, got {len(points)}")
    with warnings.catch_warnings():  # flat images repeat points: fewer distinct clusters than k is expected
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=seed).fit(points.double().numpy())
    return torch.from_numpy(fit.cluster_centers_).float()


def _nearest(points: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(N, D), (K, D) -> (N,) index of each point's nearest centroid (Euclidean)."""
    dist = (points * points).sum(1, keepdim=True) - 2 * points @ centroids.t() + (centroids * centroids).sum(1)
    return dist.argmin(1)


class ClassicVQ:
    """The classic VQ image coder: k-means over raw p x p RGB patches, each patch replaced by its nearest centroid.

    With ``depth`` > 1 it is residual: level d codes what levels 1..d-1 left. At patch p =
    a tokenizer's downsampling factor, K = its codebook size and depth = its codes per
    position, it spends exactly the tokenizer's bits per image; a trained tokenizer that
    scores below it has not learnt to code images. Images are (B, 3, H, W) in [-1, 1].
    """

    def __init__(self, patch: int, codebook_size: int, depth: int = 1, seed: int = 0):
        self.patch, self.codebook_size, self.depth, self.seed = patch, codebook_size, depth, seed
        self.levels: list[torch.Tensor] = []

    def fit(self, images: torch.Tensor) -> ClassicVQ:
        residual = patches_of(images.float(), self.patch)
        self.levels = []
        for d in range(self.depth):
            centroids = _kmeans(residual, self.codebook_size, self.seed + d)
            self.levels.append(centroids)
            residual = residual - centroids[_nearest(residual, centroids)]
        return self

    def ids(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h*w, depth) code indices."""
        residual = patches_of(images.float(), self.patch)
        out = []
        for centroids in self.levels:
            idx = _nearest(residual, centroids)
            residual = residual - centroids[idx]
            out.append(idx)
        return rearrange(torch.stack(out, -1), "(b l) d -> b l d", b=images.shape[0])

    def reconstruct(self, images: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """(B, 3, H, W) -> its reconstruction from the first ``depth`` levels (all by default), clamped to [-1, 1]."""
        ids = rearrange(self.ids(images), "b l d -> (b l) d")
        levels = self.levels[: depth or self.depth]
        patches = sum(centroids[ids[:, d]] for d, centroids in enumerate(levels))
        return from_patches(patches, images.shape[0], images.shape[2], self.patch).clamp(-1, 1)

    def bits_per_image(self, height: int, width: int) -> float:
        return (height // self.patch) * (width // self.patch) * self.depth * math.log2(self.codebook_size)


class BlockMeans:
    """Each p x p block's mean colour from a palette of ``colours`` (k-means over the training blocks' means),
    upsampled bilinearly: ``log2(colours)`` bits per block, the same bits as a tokenizer with that codebook."""

    def __init__(self, patch: int, colours: int, seed: int = 0):
        self.patch, self.colours, self.seed = patch, colours, seed
        self.palette = torch.empty(0, 3)

    def _means(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images.float(), self.patch)  # (B, 3, h, w)

    def fit(self, images: torch.Tensor) -> BlockMeans:
        self.palette = _kmeans(rearrange(self._means(images), "b c h w -> (b h w) c"), self.colours, self.seed)
        return self

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        means = self._means(images)
        flat = rearrange(means, "b c h w -> (b h w) c")
        quantised = rearrange(
            self.palette[_nearest(flat, self.palette)], "(b h w) c -> b c h w", b=means.shape[0], h=means.shape[2]
        )
        return _upsampled(quantised, images.shape[-1])


def codec_at_bytes(images: torch.Tensor, budget: float, fmt: str = "JPEG") -> tuple[torch.Tensor, float, list[int]]:
    """Each image in ``fmt`` (JPEG or WEBP) at the highest quality whose file fits ``budget`` bytes, or at
    quality 1 (its smallest file) where none does -> (reconstructions, mean bytes, qualities)."""
    out, sizes, qualities = [], [], []
    for img in images:
        pil = tensor_to_pil(img)
        best = None
        for quality in range(1, 101):
            data = encoded(pil, fmt, quality)
            if best is not None and len(data) > budget:
                break
            best = (quality, data)
        quality, data = best
        out.append(_decoded(data))
        sizes.append(len(data))
        qualities.append(quality)
    return torch.stack(out), sum(sizes) / len(sizes), qualities


def encoded(pil: Image.Image, fmt: str, quality: int) -> bytes:
    """The file ``pil`` makes in ``fmt`` (JPEG: PIL's default 4:2:0 chroma subsampling) at ``quality``."""
    buf = io.BytesIO()
    pil.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def _decoded(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        return pil_to_tensor(im.convert("RGB"))


def training_stream(data: dict[str, Any], seed: int, count: int = 1024) -> torch.Tensor:
    """The first ``count`` images of a preset's training stream (its ``data`` section, batches of 16 drawn
    from ``seed``) as (count, 3, S, S) in [-1, 1]: what the classic codecs are fitted on, so they see what
    the tokenizer sees."""
    if count % 16:
        raise ValueError(f"the training stream comes in batches of 16; {count} images is not a whole number of them")
    return torch.cat(list(itertools.islice(iterate_batches(DataConfig(**data), 16, seed), count // 16)))


def classic_vq_scores(
    patch: int, codebook_size: int, depth: int, fit: torch.Tensor, splits: dict[str, torch.Tensor], seed: int = 0
) -> dict[str, dict[str, float]]:
    """PSNR (dB, unrounded) of :class:`ClassicVQ` fitted on ``fit``, on each split: {"classic_vq": {split: dB,
    "bits": bits per image}}, and with ``depth`` > 1 also ``classic_vq_d{d}`` for the first d < ``depth`` levels."""
    size = next(iter(splits.values())).shape[-1]
    classic = ClassicVQ(patch, codebook_size, depth, seed).fit(fit)
    bits = classic.bits_per_image(size, size)
    rows: dict[str, dict[str, float]] = {}
    for d in range(1, depth + 1):
        name = "classic_vq" if d == depth else f"classic_vq_d{d}"
        rows[name] = {s: mean_psnr(x, classic.reconstruct(x, d)) for s, x in splits.items()}
        rows[name]["bits"] = bits * d / depth
    return rows


def classic_scores(
    patch: int, codebook_size: int, depth: int, fit: torch.Tensor, splits: dict[str, torch.Tensor], seed: int = 0
) -> dict[str, dict[str, float]]:
    """PSNR of the classic codecs at a tokenizer's bits, on each split: {codec: {split: dB, "bits": ...}}.

    The tokenizer's bits are (H/patch) * (W/patch) * depth * log2(codebook_size) per image.
    ``classic_vq`` and ``block_means`` are fitted on ``fit`` (the images the tokenizer trains on);
    JPEG and WebP get the same bytes (or their smallest file, with its size, where that is larger).
    Residual ``classic_vq`` is also scored at every depth d < ``depth`` (``classic_vq_d{d}``).
    PSNRs are rounded to 3 decimals.
    """
    size = next(iter(splits.values())).shape[-1]
    rows = {
        name: {k: v if k == "bits" else round(v, 3) for k, v in row.items()}
        for name, row in classic_vq_scores(patch, codebook_size, depth, fit, splits, seed).items()
    }
    bits = ClassicVQ(patch, codebook_size, depth).bits_per_image(size, size)
    # One palette colour per block: at depth > 1 the palette would outnumber the blocks, so the means are exact.
    colours = codebook_size**depth
    blocks = BlockMeans(patch, colours, seed).fit(fit) if colours * 4 <= len(patches_of(fit, patch)) else None
    rows["block_means"] = {
        s: round(mean_psnr(x, blocks.reconstruct(x) if blocks else _bilinear_means(x, patch)), 3)
        for s, x in splits.items()
    }
    rows["block_means"]["bits"] = bits if blocks else float(size // patch) ** 2 * 24
    for fmt in ("JPEG", "WEBP"):
        name = fmt.lower()
        rows[name] = {}
        for s, x in splits.items():
            recon, mean_bytes, _ = codec_at_bytes(x, bits / 8, fmt)
            rows[name][s] = round(mean_psnr(x, recon), 3)
            rows[name][f"{s}_bytes"] = round(mean_bytes, 1)
        rows[name]["bits"] = bits
    return rows


def _bilinear_means(images: torch.Tensor, patch: int) -> torch.Tensor:
    return _upsampled(F.avg_pool2d(images.float(), patch), images.shape[-1])


def _upsampled(means: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, h, w) block colours -> (B, 3, size, size), bilinear, clamped to [-1, 1]."""
    return F.interpolate(means, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)
