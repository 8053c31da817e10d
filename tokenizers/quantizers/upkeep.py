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
across ranks). A restarted code starts at the larger of the mean count and the
threshold: under a share below 1 it gets the same grace period at every batch size,
about ln(1 / share) / (1 - decay) steps; at a share of 1 or more it must be picked
again at once or it is restarted on the next step, as the library does with its own
reset count (the threshold).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from . import vqlib


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
    threshold, reset = restart_levels(global_vectors(vectors), codebook_size, share)
    for codebook in codebooks:
        vqlib.set_restart_levels(codebook, threshold, reset)


def restart_levels(vectors: int, codebook_size: int, share: float) -> tuple[float, float]:
    """(threshold, reset count) for ``vectors`` quantized over all ranks this step: ``share`` x the mean
    per-code count, and the count a restarted code starts at (the larger of the mean and the threshold)."""
    mean = vectors / codebook_size
    return share * mean, max(share, 1.0) * mean


@contextlib.contextmanager
def init_only_in_training(codebooks: Iterable[nn.Module], training: bool) -> Iterator[None]:
    """Within this block, codebooks not yet k-means-initialised stay as they are unless ``training``."""
    held = [] if training else [c for c in codebooks if not vqlib.is_initialised(c)]
    for codebook in held:
        vqlib.set_initialised(codebook, True)
    try:
        yield
    finally:
        for codebook in held:
            vqlib.set_initialised(codebook, False)


@torch.no_grad()
def eval_mode_ids(quantizer: nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``quantizer(latents).ids`` with the quantizer in eval mode (full depth: no quantize dropout, no updates),
    its mode restored after."""
    was_training = quantizer.training
    quantizer.eval()
    try:
        return quantizer(latents).ids
    finally:
        quantizer.train(was_training)
