"""Adaptive length for 1D tokenizers: per image, the shortest prefix whose reconstruction meets a target.

Two ways, one result type (:class:`AdaptiveResult`):

- :func:`encode_adaptive`, the reference: a batched binary search over prefix lengths.
- :func:`encode_single_pass`: a tokenizer's halting head (KARL: Duggal et al., 2025, "Single-pass Adaptive
  Image Tokenization for Minimum Program Search") predicts each image's length from one encoder pass;
  one decode then says whether each image met the target.

The search: a batched binary search over prefix lengths: every round decodes the whole batch
once, each image at the middle of its own remaining interval (per-sample lengths
in one decode), so a search costs ceil(log2 N) + 1 batched decodes, not N decodes
per image. It assumes quality grows with the prefix (what the ordering
regularisers train for); an image that misses the target even with all N tokens
keeps N and is reported as not met.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vtok.errors import VtokError
from vtok.eval.lpips import load_lpips, lpips_per_image
from vtok.eval.metric import MetricUnavailable, to_unit
from vtok.eval.psnr import psnr_per_image
from vtok.eval.ssim import ssim_per_image
from vtok.tokens import Tokens


def l1_per_image(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """real, fake: (B, 3, H, W) in [-1, 1] -> (B,) mean absolute error on 8-bit [0, 1] values."""
    return (to_unit(real) - to_unit(fake)).abs().flatten(1).mean(1)


# name -> (per-image score, True when higher is better)
TARGETS = {
    "psnr": (psnr_per_image, True),
    "ssim": (ssim_per_image, True),
    "lpips": (lpips_per_image, False),  # LPIPS-AlexNet, as the metric reports it
    "l1": (l1_per_image, False),  # KARL's condition: mean absolute error on 8-bit [0, 1] values
}


def parse_target(spec: str) -> tuple[str, float]:
    """'psnr=30' -> ('psnr', 30.0); one-line errors otherwise."""
    name, _, value = spec.partition("=")
    name = name.strip().lower()
    if name not in TARGETS or not value:
        raise VtokError(f"target must look like psnr=30, ssim=0.8, lpips=0.1 or l1=0.05, got {spec!r}")
    try:
        number = float(value)
    except ValueError:
        raise VtokError(f"target value {value!r} is not a number") from None
    if not math.isfinite(number):  # nan is met by no image and inf by none either: a target that means nothing
        raise VtokError(f"target value {value!r} must be a finite number")
    return name, number


def meets(name: str, threshold: float, scores: torch.Tensor) -> torch.Tensor:
    """(B,) bool: each score reaches ``threshold`` in the metric's direction (lower is better for lpips)."""
    return scores >= threshold if TARGETS[name][1] else scores <= threshold


def check_available(name: str, device: torch.device) -> None:
    """Fail early, in one line, where the target's metric cannot run (LPIPS without its backbone weights)."""
    if name != "lpips":
        return
    try:
        load_lpips("alex", device.type)
    except MetricUnavailable as err:
        raise VtokError(f"an lpips target needs the LPIPS backbone: {err}") from None


@dataclass
class AdaptiveResult:
    tokens: Tokens
    met: torch.Tensor  # (B,) bool: the target is reached at the chosen length
    scores: torch.Tensor  # (B,) the score at the chosen length
    decodes: int  # batched decodes the search used


@torch.inference_mode()
def encode_adaptive(tokenizer, images: torch.Tensor, target: str, max_tokens: int | None = None) -> AdaptiveResult:
    """images (B, 3, H, W) in [-1, 1] -> the shortest prefix per image meeting ``target`` (e.g. 'psnr=30')."""
    name, threshold = parse_target(target)
    check_available(name, images.device)
    score_fn = TARGETS[name][0]
    if tokenizer.num_tokens is None:
        raise VtokError("adaptive length (--target, --max-tokens) needs a variable-length 1D tokenizer")
    full = tokenizer.encode(images)
    n = min(max_tokens or full.num_positions, full.num_positions)
    b = images.shape[0]
    lo = torch.ones(b, dtype=torch.long)
    hi = torch.full((b,), n, dtype=torch.long)

    def scores_at(lengths: torch.Tensor) -> torch.Tensor:
        return score_fn(images, tokenizer.decode(full.prefix(lengths))).cpu()

    decodes = 0
    for _ in range(max(1, math.ceil(math.log2(n)))):
        if bool((lo >= hi).all()):
            break
        mid = (lo + hi) // 2
        ok = meets(name, threshold, scores_at(mid))
        decodes += 1
        active = lo < hi
        hi = torch.where(active & ok, mid, hi)
        lo = torch.where(active & ~ok, mid + 1, lo)
    final = scores_at(hi)
    decodes += 1
    return AdaptiveResult(full.prefix(hi), meets(name, threshold, final), final, decodes)


def require_halting(tokenizer, name: str) -> None:
    """Refuse, in one line, a tokenizer whose halting head is missing or answers another metric than ``name``."""
    head = getattr(tokenizer, "halting", None)
    if head is None:
        raise VtokError(
            "--single-pass needs a tokenizer with a halting head (model.halting) and this one has none; "
            "drop --single-pass to search, or train a head (vtok train PRESET --overlay halting)"
        )
    if name != head.metric:
        raise VtokError(f"this tokenizer's halting head answers {head.metric} targets, not {name}")


@torch.inference_mode()
def encode_single_pass(
    tokenizer, images: torch.Tensor, target: str, max_tokens: int | None = None, margin: float = 0.0
) -> AdaptiveResult:
    """images (B, 3, H, W) in [-1, 1] -> each image's prefix as its halting head predicts it for ``target``.

    The length comes from one encoder pass and the head (no search); one decode of the chosen prefixes then
    fills ``met`` and ``scores`` like :func:`encode_adaptive`'s (``decodes`` is 1). ``margin`` asks the head
    for that much more than the target, in dB (of PSNR, or of -20 log10 L1): more images meet it, at more tokens.
    """
    name, threshold = parse_target(target)
    require_halting(tokenizer, name)
    tokens = tokenizer.encode_to_quality(images, threshold, max_tokens, margin)
    scores = TARGETS[name][0](images, tokenizer.decode(tokens)).cpu()
    return AdaptiveResult(tokens, meets(name, threshold, scores), scores, 1)
