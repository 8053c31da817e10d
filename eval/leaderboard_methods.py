"""The rows of a leaderboard: tokenizers at their rates, the classic codecs at the same bits, a continuous reference.

A :class:`Method` is a reconstruct function (B, 3, H, W) in [-1, 1] -> same shape, with the
rate it spends. Tokenizers spend ``positions x sum(log2 K_c)`` bits per image (``K_c`` the
size of code ``c``'s codebook, positions counted from the tokens a probe image gives, the
valid prefix for variable-length 1D tokenizers). The classic codecs are those of
:mod:`vtok.eval.baselines`, placed at each tokenizer's bits: k-means VQ of raw patches
(:class:`~vtok.eval.baselines.ClassicVQ`) and JPEG / WebP at equal bytes
(:func:`~vtok.eval.baselines.codec_at_bytes`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vtok.errors import VtokError, one_line
from vtok.eval.baselines import ClassicVQ, codec_at_bytes, training_stream
from vtok.interfaces import Tokenizer
from vtok.pipeline import reconstruct_with

Reconstruct = Callable[[torch.Tensor], torch.Tensor]
MAX_LEVEL_BITS = 10  # classic VQ levels of at most 1024 centroids: a k-means fit stays seconds, not minutes
FIT_IMAGES = 1024  # classic VQ is fitted on this many images of the built-in training stream, as `vtok demo` fits it
FIT_PRESET = "vq_demo"  # classic VQ is fitted on this preset's training stream: the one `vtok demo` trains and fits


@functools.cache
def fit_data() -> dict[str, Any]:
    """The ``data`` section classic VQ is fitted on: :data:`FIT_PRESET`'s training stream, colour jitter included.

    Read from the preset, so the leaderboard and `vtok demo` fit the same codec (the stronger one: without the
    jitter k-means VQ of 8 px patches scores 1.1 dB lower on the held-out crops at 640 bits, 21.19 against
    22.29 dB). The image size is the leaderboard's; workers and held-out images do not change the stream.
    """
    import vtok

    data = vtok.load_config(FIT_PRESET)["data"]
    return {k: v for k, v in data.items() if k not in ("image_size", "num_workers", "held_out")}


@dataclass
class Method:
    """One row of the leaderboard.

    Attributes:
        name: the row's label, unique in its table.
        kind: ``tokenizer``, ``codec`` or ``reference``.
        curve: rows sharing a curve are joined in the rate-distortion plot (a 1D tokenizer's
            budgets, one codec's rates); a fixed-rate tokenizer is its own one-point curve.
        reconstruct: images (B, 3, H, W) in [-1, 1] -> reconstructions, same shape; None for a
            row that only states why it could not run (``reason``).
        bits: bits per image it spends (a codec's target until it has run; then what it spent).
        tokens: tokens per image (tokenizers), else None.
        key: what the row's scores depend on besides the data (cache key).
        info: facts about the row for the JSON (layout, qualities, ...).
        reason: one line saying why the row has no scores.
    """

    name: str
    kind: str
    curve: str
    reconstruct: Reconstruct | None
    bits: float | None
    tokens: int | None = None
    key: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None


def token_bits(tokenizer: Tokenizer, probe: torch.Tensor, num_tokens: int | None = None) -> tuple[float, int]:
    """(bits per image, tokens per image) ``tokenizer`` spends on ``probe`` (B, 3, H, W) in [-1, 1].

    Bits are positions x sum over codes of log2(codebook size); positions are the valid
    prefix of a variable-length tokenizer. Raises whatever the tokenizer raises on an
    input it cannot take (the caller turns it into a reason).
    """
    with torch.inference_mode():
        kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
        tokens = tokenizer.encode(probe.to(_device(tokenizer)), **kwargs)
    per_position = sum(math.log2(k) for k in tokens.codebook_sizes)
    positions = float(tokens.lengths.float().mean()) if tokens.lengths is not None else float(tokens.num_positions)
    return positions * per_position, round(positions)


def _device(model: torch.nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def default_budgets(num_tokens: int) -> list[int]:
    """A 1D tokenizer's token budgets when none are given: a quarter, a half and all of its tokens."""
    return sorted({max(1, num_tokens // 4), max(1, num_tokens // 2), num_tokens})


def tokenizer_methods(
    name: str, tokenizer: Tokenizer, fingerprint: str, probe: torch.Tensor, budgets: list[int] | None
) -> list[Method]:
    """The rows of one tokenizer: one, or one per token budget of a variable-length 1D tokenizer.

    A tokenizer that cannot take ``probe``'s size or aspect gives one row with the reason.
    """
    if tokenizer.num_tokens is None:
        counts: list[int | None] = [None]
    else:
        counts = list(budgets or default_budgets(tokenizer.num_tokens))
        over = [k for k in counts if k > tokenizer.num_tokens]
        if over:
            raise VtokError(f"--tokens {over[0]}: {name} codes at most {tokenizer.num_tokens} tokens")
    rows = []
    for k in counts:
        label = name if k is None else f"{name} @{k}"
        try:
            bits, tokens = token_bits(tokenizer, probe, k)
        except (VtokError, RuntimeError, ValueError, AssertionError) as err:
            reason = _reason(err)
            return [Method(name, "tokenizer", name, None, None, reason=f"cannot take {_shape(probe)} images: {reason}")]
        rows.append(
            Method(
                label,
                "tokenizer",
                name,
                reconstruct_with(tokenizer, k),
                bits,
                tokens,
                key=f"tokenizer {fingerprint} tokens={k}",
                info={"layout": _layout(tokenizer, probe, k)},
            )
        )
    return rows


def _shape(images: torch.Tensor) -> str:
    return f"{images.shape[-1]}x{images.shape[-2]}"


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return one_line(text[0] if text else type(err).__name__)


def _layout(tokenizer: Tokenizer, probe: torch.Tensor, num_tokens: int | None) -> dict[str, Any]:
    """The token layout of one probe image: grid (None for 1D), codes per position and codebook sizes."""
    with torch.inference_mode():
        kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
        tokens = tokenizer.encode(probe[:1].to(_device(tokenizer)), **kwargs)
    return {
        "grid": list(tokens.grid) if tokens.grid is not None else None,
        "multi_scale": tokens.scales is not None,
        "codebook_sizes": list(tokens.codebook_sizes),
    }


# --- classic VQ --------------------------------------------------------------------------------------------------


def classic_layout(bits: float, size: int, native: dict[str, Any] | None = None) -> tuple[int, int, int]:
    """(patch, codebook size, depth) of a classic VQ that spends ``bits`` per ``size`` x ``size`` image.

    A single-scale grid tokenizer whose codes share one codebook size (at most 2^10) gives its
    own layout (patch = its downsampling, K, depth = codes per position), so classic VQ codes
    exactly the same positions. Otherwise the power-of-two patch (at least 4 pixels) that gets a
    whole number of bits, nearest to 8-20 bits a patch (where k-means of raw patches codes best
    for its size), split into as few levels of at most 10 bits as divide it evenly, with at least
    4 fitting patches per centroid. Where no patch divides the bits, the nearest whole number of
    bits per 16-pixel patch (the row then states its own, slightly different, bits).
    """
    if native and native.get("grid") and not native.get("multi_scale"):
        sizes = native["codebook_sizes"]
        h, w = native["grid"]
        if len(set(sizes)) == 1 and sizes[0] <= 2**MAX_LEVEL_BITS and h == w and size % h == 0:
            return size // h, sizes[0], len(sizes)
    candidates = []
    patch = 4
    while patch <= size:
        positions = (size // patch) ** 2
        per_patch = bits / positions
        whole = round(per_patch)
        if size % patch == 0 and whole >= 4 and abs(per_patch - whole) < 1e-6:
            levels = _levels(whole)
            if levels is not None and positions * FIT_IMAGES >= 4 * 2 ** (whole // levels):
                distance = max(0, 8 - whole, whole - 20)
                candidates.append((distance, patch, 2 ** (whole // levels), levels))
        patch *= 2
    if candidates:
        _, patch, k, levels = min(candidates)
        return patch, k, levels
    patch = min(16, size)
    per_patch = max(4, round(bits / (size // patch) ** 2))
    levels = math.ceil(per_patch / MAX_LEVEL_BITS)
    return patch, 2 ** round(per_patch / levels), levels


def _levels(bits: int) -> int | None:
    """The fewest levels of at most :data:`MAX_LEVEL_BITS` that split ``bits`` evenly, or None."""
    for levels in range(math.ceil(bits / MAX_LEVEL_BITS), bits + 1):
        if bits % levels == 0 and bits // levels >= 2:
            return levels
    return None


class ClassicVQCache:
    """Classic VQ codecs fitted once per (patch, K, depth, size) on ``images`` images of the built-in training
    stream (a multiple of 16; the layout rule of :func:`classic_layout` does not depend on it)."""

    def __init__(self, seed: int = 0, images: int = FIT_IMAGES):
        if images < 16 or images % 16:
            raise VtokError(f"classic VQ is fitted on whole batches of 16 training images; {images} is not one")
        self.seed, self.images = seed, images
        self.fitted: dict[tuple[int, int, int, int], ClassicVQ] = {}

    def get(self, patch: int, codebook_size: int, depth: int, size: int) -> ClassicVQ:
        key = (patch, codebook_size, depth, size)
        if key not in self.fitted:
            images = training_stream({**fit_data(), "image_size": size}, self.seed, self.images)
            self.fitted[key] = ClassicVQ(patch, codebook_size, depth, self.seed).fit(images)
        return self.fitted[key]


def classic_vq_method(bits: float, size: int, native: dict[str, Any] | None, cache: ClassicVQCache, tag: str) -> Method:
    """Classic VQ at ``bits`` per image (fitted on first use)."""
    patch, k, depth = classic_layout(bits, size, native)
    spent = (size // patch) ** 2 * depth * math.log2(k)

    def run(images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] % patch or images.shape[-2] % patch:
            raise VtokError(f"classic VQ codes whole {patch}-pixel patches, got {_shape(images)}")
        return cache.get(patch, k, depth, size).reconstruct(images.cpu())

    return Method(
        f"classic_vq {tag}",
        "codec",
        "classic_vq",
        run,
        spent,
        key=f"classic_vq patch={patch} k={k} depth={depth} seed={cache.seed} fit={cache.images} stream={fit_data()}",
        info={"patch": patch, "codebook_size": k, "depth": depth},
    )


# --- JPEG / WebP at equal bytes ------------------------------------------------------------------------------------


class AtBytes:
    """``fmt`` (JPEG or WEBP) at the highest quality whose file fits ``budget`` bytes per ``side`` x ``side``
    pixels (quality 1 where none does), keeping the bytes and qualities it spent so the row states its true
    rate. An image of another size gets the budget of its area, as a tokenizer spends its bits per area."""

    def __init__(self, fmt: str, budget: float, side: int):
        self.fmt, self.budget, self.side = fmt, budget, side
        self.spent = 0.0  # bytes
        self.pixels = 0
        self.qualities: list[int] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        area = images.shape[-1] * images.shape[-2]
        recon, mean_bytes, qualities = codec_at_bytes(images.cpu(), self.budget * area / self.side**2, self.fmt)
        self.spent += mean_bytes * len(qualities)
        self.pixels += area * len(qualities)
        self.qualities += qualities
        return recon

    def spent_bits(self) -> float:
        """Mean bits per ``side`` x ``side`` pixels."""
        return 8 * self.spent / max(1, self.pixels) * self.side**2

    def at_floor(self) -> bool:
        """Every image at quality 1: the format's smallest files, so any lower budget gives the same row."""
        return bool(self.qualities) and all(q == 1 for q in self.qualities)


def codec_method(fmt: str, bits: float, side: int, tag: str) -> Method:
    """``fmt`` at ``bits`` per ``side`` x ``side`` image."""
    codec = AtBytes(fmt, bits / 8, side)
    name = fmt.lower()
    return Method(f"{name} {tag}", "codec", name, codec, bits, key=f"{name} bytes={bits / 8:.3f}", info={})


def codec_rates(methods: list[Method]) -> list[tuple[float, dict[str, Any] | None, list[str]]]:
    """The distinct bits per image of the tokenizer rows, highest first, each with the layout of the first
    tokenizer at it (classic VQ copies a native layout) and the names of the tokenizers at that rate."""
    rates: dict[float, tuple[dict[str, Any] | None, list[str]]] = {}
    for m in methods:
        if m.kind == "tokenizer" and m.bits is not None:
            rates.setdefault(round(m.bits, 3), (m.info.get("layout"), []))[1].append(m.name)
    return [(bits, layout, names) for bits, (layout, names) in sorted(rates.items(), reverse=True)]
