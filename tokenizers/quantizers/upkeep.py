"""Codebook upkeep around vector-quantize-pytorch: k-means init in training only, batch-relative restarts.

The library k-means-initialises a codebook on the first forward pass, in eval mode
too; a fresh model that is only evaluated would then change its own weights on
first use, so :func:`init_only_in_training` holds the init back outside training.

Dead-code restarts whose threshold follows the batch: a share of the mean use of a code.

vector-quantize-pytorch restarts a code when the EMA of its per-step count falls
under an absolute number. The mean count of a code is (vectors per step) / K, so
one absolute number means "never restart" at batch 256 and "restart everything
every step" at batch 4 with a large codebook. Here the threshold is a share of
that mean, computed from the global batch (the library all-reduces the counts
across ranks), and a restarted code starts at the mean count, so it gets the same
grace period at every batch size: about ln(1 / share) / (1 - decay) steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch.distributed as dist
from torch import nn


def global_vectors(local: int) -> int:
    """Vectors quantized this step over all ranks (the library's counts are all-reduced)."""
    if dist.is_available() and dist.is_initialized():
        return local * dist.get_world_size()
    return local


def scale_dead_code_thresholds(codebooks: Iterable[nn.Module], vectors: int, codebook_size: int, share: float) -> None:
    """Set the library codebooks' restart threshold to ``share`` x the mean per-code count of this step.

    Args:
        codebooks: vector-quantize-pytorch ``EuclideanCodebook``/``CosineSimCodebook`` modules.
        vectors: vectors quantized by this rank this step (B * L).
        codebook_size: K.
        share: a code whose EMA count is under ``share * vectors / K`` is restarted.
    """
    mean = global_vectors(vectors) / codebook_size
    for codebook in codebooks:
        codebook.threshold_ema_dead_code = share * mean
        codebook.reset_cluster_size = mean


@contextlib.contextmanager
def init_only_in_training(codebooks: Iterable[nn.Module], training: bool) -> Iterator[None]:
    """Within this block, codebooks not yet k-means-initialised stay as they are unless ``training``."""
    held = [] if training else [c for c in codebooks if not bool(c.initted)]
    for codebook in held:
        codebook.initted.fill_(True)
    try:
        yield
    finally:
        for codebook in held:
            codebook.initted.fill_(False)
