"""Streaming feature statistics: Gaussian moments for Fréchet distances, a reservoir for KID.

Neither holds all features: :class:`GaussianStats` keeps float64 running sums
(count, sum, sum of outer products), so a million images cost one D x D matrix;
:class:`FeatureReservoir` keeps a uniform sample of at most ``capacity`` rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vtok.errors import VtokError


class GaussianStats:
    """Running mean and covariance of (N, D) features in float64.

    ``covariance`` matches ``np.cov(features, rowvar=False)`` (unbiased, n - 1).
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.sum = np.zeros(self.dim, dtype=np.float64)
        self.outer = np.zeros((self.dim, self.dim), dtype=np.float64)

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        x = x.reshape(len(x), -1).astype(np.float64, copy=False)  # (N, D)
        if x.shape[1] != self.dim:
            raise ValueError(f"features of dim {x.shape[1]}, expected {self.dim}")
        self.count += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def merge(self, other: GaussianStats) -> None:
        """Add another rank's sums (float64: equal to one pass up to the order of summation)."""
        self.count += other.count
        self.sum += other.sum
        self.outer += other.outer

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.count

    @property
    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise VtokError(f"a covariance needs at least 2 images, got {self.count}")
        mu = self.mean
        return (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance of two Gaussians, by pytorch-fid's own function (scipy sqrtm, its eps rule)."""
    import warnings

    from pytorch_fid.fid_score import calculate_frechet_distance

    with warnings.catch_warnings():
        # Below 2048 images the covariances are singular; pytorch-fid handles it (eps offset)
        # and the report carries a caution instead of a warning on the terminal.
        warnings.simplefilter("ignore")
        return float(calculate_frechet_distance(mu1, sigma1, mu2, sigma2))


def load_reference_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of a reference set: an ADM-style ``.npz`` with ``mu`` and ``sigma``.

    ADM's reference batches (``VIRTUAL_imagenet256_labeled.npz``) carry them next to
    the images ``arr_0``; pytorch-fid's saved statistics use the same two keys.
    """
    path = Path(path)
    if not path.is_file():
        raise VtokError(f"reference statistics {path} do not exist")
    from vtok.memory import check_zip

    check_zip(path)  # an .npz is a zip: a bomb is refused before inflating
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise VtokError(f"{path} has no 'mu'/'sigma' arrays (keys: {', '.join(data.files)})")
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    except (OSError, ValueError) as e:
        raise VtokError(f"{path} is not a readable .npz file ({e})") from e


class FeatureReservoir:
    """A uniform random sample of at most ``capacity`` feature rows (Vitter's algorithm R).

    Exact (every row kept) while fewer than ``capacity`` rows have been seen; the
    seed makes the sample reproducible.
    """

    def __init__(self, dim: int, capacity: int = 5000, seed: int = 0):
        self.dim, self.capacity, self.seed = dim, capacity, seed
        self.reset()

    def reset(self) -> None:
        self.rows = np.zeros((self.capacity, self.dim), dtype=np.float32)
        self.seen = 0
        self.rng = np.random.default_rng(self.seed)

    def update(self, features: torch.Tensor) -> None:
        x = features.detach().cpu().float().reshape(len(features), -1).numpy()  # (N, D)
        for row in x:
            if self.seen < self.capacity:
                self.rows[self.seen] = row
            else:
                j = int(self.rng.integers(0, self.seen + 1))
                if j < self.capacity:
                    self.rows[j] = row
            self.seen += 1

    def merge(self, other: FeatureReservoir) -> None:
        """Append another rank's reservoir, whose rows came after this one's.

        While both together hold at most ``capacity`` rows nothing was dropped, and the
        merged rows are those one process keeps, in its order. Past that, each side keeps
        a share of the capacity proportional to the rows it has seen (a uniform sample of
        the union, seeded, but not the one a single process draws).
        """
        mine, theirs = self.sample, other.sample
        seen = self.seen + other.seen
        if len(mine) + len(theirs) > self.capacity:
            rng = np.random.default_rng([self.seed, self.seen, other.seen])
            keep = round(self.capacity * self.seen / seen)
            keep = min(max(keep, self.capacity - len(theirs)), len(mine))
            mine = mine[np.sort(rng.choice(len(mine), keep, replace=False))]
            theirs = theirs[np.sort(rng.choice(len(theirs), self.capacity - keep, replace=False))]
        rows = np.concatenate([mine, theirs])
        self.rows[: len(rows)] = rows
        self.seen = seen

    @property
    def sample(self) -> np.ndarray:
        return self.rows[: min(self.seen, self.capacity)]


def kernel_inception_distance(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over subsets): unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3.

    The estimator of Binkowski et al. as torch-fidelity computes it, written out
    here because both libraries want every feature in memory at once; the subset
    size shrinks to the smaller set when it has fewer rows.
    """
    n = min(len(real), len(fake), subset_size)
    if n < 2:
        raise VtokError(f"KID needs at least 2 images per side, got {min(len(real), len(fake))}")
    rng = np.random.default_rng(seed)
    d = real.shape[1]
    values = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), n, replace=False)].astype(np.float64)
        y = fake[rng.choice(len(fake), n, replace=False)].astype(np.float64)
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))
