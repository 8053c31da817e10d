"""gFID of generated images (a folder, e.g. ``vtok generate`` output cut into images) against a reference set.

The reference is an ADM-style ``.npz`` with ``mu``/``sigma`` (pool3 statistics, as
ADM's ``VIRTUAL_imagenet256_labeled.npz``) or a folder of real images, whose
statistics are computed here with the same network and preprocessing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vtok.data import list_images
from vtok.errors import VtokError
from vtok.eval.features import InceptionFeatures
from vtok.eval.frechet import GaussianStats, frechet_distance, load_reference_stats
from vtok.images import center_crop_arr, load_image, pil_to_tensor


def folder_stats(
    folder: str | Path, features: InceptionFeatures, size: int, batch_size: int, progress: bool
) -> GaussianStats:
    """Streaming pool3 statistics of every readable image in ``folder`` (ADM center crop to ``size``)."""
    files = list_images(folder)
    stats = GaussianStats(features.dim)
    for start in tqdm(range(0, len(files), batch_size), desc=f"features {Path(folder).name}", disable=not progress):
        batch = []
        for f in files[start : start + batch_size]:
            try:
                batch.append(pil_to_tensor(center_crop_arr(load_image(f), size)))
            except VtokError as err:
                tqdm.write(f"skipping {err}")
        if batch:
            stats.update(features(torch.stack(batch)))
    if stats.count < 2:
        raise VtokError(f"{folder}: a Frechet distance needs at least 2 readable images, got {stats.count}")
    return stats


def generation_fid(
    generated: str | Path,
    reference: str | Path,
    size: int = 256,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = True,
    backbone: str = "inception",
) -> tuple[dict[str, float], dict[str, Any]]:
    """({"gFID": value}, protocol) of the images in ``generated`` against ``reference`` (.npz or folder).

    ``backbone="effnet_lite0"`` gives ``{"gFD_effnet_lite0": value}`` instead (a folder reference only:
    reference statistics files hold Inception features).
    """
    if backbone == "inception":
        features, column = InceptionFeatures(device=device), "gFID"
    else:
        from vtok.eval.features import EffNetFeatures

        features, column = EffNetFeatures(device=device), f"gFD_{backbone}"
    fake = folder_stats(generated, features, size, batch_size, progress)
    ref = Path(reference)
    if ref.suffix == ".npz":
        if column != "gFID":
            raise VtokError(f"{column} needs a folder of reference images: {ref} holds Inception statistics")
        mu, sigma = load_reference_stats(ref)
        ref_count = "statistics file"
    else:
        real = folder_stats(ref, features, size, batch_size, progress)
        mu, sigma, ref_count = real.mean, real.covariance, real.count
    if np.shape(mu) != (features.dim,):
        raise VtokError(f"{ref}: reference statistics have shape {np.shape(mu)}, expected ({features.dim},)")
    value = frechet_distance(fake.mean, fake.covariance, mu, sigma)
    protocol = {
        **features.protocol(),
        "images": fake.count,
        "reference": f"{ref} ({ref_count} images)",
        "resize": f"ADM center crop to {size}",
    }
    return {column: value}, protocol
