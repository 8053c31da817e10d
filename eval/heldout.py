"""A tokenizer scored on a set of images: reconstruct them, then read PSNR, color error and codes in use.

The demo and every benchmark score tokenizers this one way, most often on the built-in
crops (:func:`crops`: 13 fixed windows of each built-in photograph, 182 for training and 52
held out), so their numbers are the same quantity as ``vtok eval``'s ``psnr`` metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vtok.builtin import builtin_crops
from vtok.eval.psnr import PSNR
from vtok.images import pil_to_tensor
from vtok.interfaces import Tokenizer
from vtok.pipeline import decode_batched, encode_batched
from vtok.tokens import Tokens


def named_crops(split: str, size: int) -> tuple[list[str], torch.Tensor]:
    """The built-in crops of ``split`` ("train", "heldout" or "all"): names and (N, 3, size, size) in [-1, 1]."""
    named = builtin_crops(split, size)
    return [name for name, _ in named], torch.stack([pil_to_tensor(image) for _, image in named])


def crops(split: str, size: int) -> torch.Tensor:
    """The built-in crops of ``split`` as (N, 3, size, size) in [-1, 1] (see :func:`named_crops`)."""
    return named_crops(split, size)[1]


def mean_psnr(real: torch.Tensor, fake: torch.Tensor) -> float:
    """real, fake: (N, 3, H, W) in [-1, 1] -> the mean of per-image PSNR (dB): the ``psnr`` metric's number."""
    metric = PSNR()
    metric.update(real, fake)
    return metric.compute()["PSNR"]


@dataclass
class Reconstruction:
    """Images, their reconstructions and, where a tokenizer made them, the tokens in between.

    ``images`` and ``recon`` are (N, 3, H, W) in [-1, 1]; ``tokens`` holds N images' ids
    (None for a reconstruction without tokens, such as a continuous ceiling).
    """

    images: torch.Tensor
    recon: torch.Tensor
    tokens: Tokens | None = None

    def psnr(self) -> float:
        """Mean per-image PSNR in dB (:func:`mean_psnr`)."""
        return mean_psnr(self.images, self.recon)

    def color_error(self) -> torch.Tensor:
        """(3,) mean of reconstruction - original per channel (R, G, B), in [-1, 1] units: a color cast."""
        return (self.recon - self.images).mean((0, 2, 3))

    def codes_used(self) -> int:
        """Distinct ids among all tokens (all positions and codes together)."""
        if self.tokens is None:
            raise ValueError("a reconstruction without tokens uses no codes")
        return len(torch.unique(self.tokens.ids))


def reconstruct(
    tokenizer: Tokenizer, images: torch.Tensor, batch_size: int = 16, progress: bool = False
) -> Reconstruction:
    """images: (N, 3, H, W) in [-1, 1] -> their tokens and decodes, ``batch_size`` images at a time.

    Runs on the tokenizer's device in float32; images, tokens and reconstructions come back on the CPU.
    """
    tokens = encode_batched(tokenizer, images, batch_size=batch_size, progress=progress)
    recon = decode_batched(tokenizer, tokens, batch_size=batch_size, progress=progress)
    return Reconstruction(images.cpu(), recon, tokens)
