"""Batched encode / decode / reconstruct over many images, with a progress bar.

Batches go to the tokenizer's device and come back to the CPU; ``precision="bf16"`` runs
the encoder and decoder under autocast (quantization stays float32, see :mod:`vtok.fast`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from vtok.fast import autocast
from vtok.interfaces import Tokenizer
from vtok.tokens import Tokens


def device_of(model: object) -> torch.device:
    """Where a model's weights are; the CPU for anything without parameters (wrappers, codecs)."""
    parameters = getattr(model, "parameters", None)
    first = next(iter(parameters()), None) if callable(parameters) else None
    return first.device if first is not None else torch.device("cpu")


def reconstruct_with(
    tokenizer: Tokenizer, num_tokens: int | None = None, precision: str = "fp32"
) -> Callable[[torch.Tensor], torch.Tensor]:
    """images (B, 3, H, W) in [-1, 1] -> decode(encode(images)) in float32, clamped to [-1, 1]."""
    kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
    device = device_of(tokenizer)

    def run(images: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            recon = tokenizer.decode(tokenizer.encode(images.to(device), **kwargs))
        return recon.float().clamp(-1, 1).to(images.device)

    return run


@torch.inference_mode()
def encode_batched(
    tokenizer: Tokenizer,
    images: torch.Tensor,
    batch_size: int = 16,
    progress: bool = True,
    num_tokens: int | None = None,
    precision: str = "fp32",
) -> Tokens:
    """images: (N, 3, H, W) in [-1, 1] -> Tokens of all N images (1D tokenizers: the first ``num_tokens``)."""
    kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
    device = device_of(tokenizer)
    parts = []
    for chunk in tqdm(images.split(batch_size), desc="encode", disable=not progress, leave=False):
        with autocast(device, precision):
            parts.append(tokenizer.encode(chunk.to(device), **kwargs).to("cpu"))
    return Tokens.cat(parts)


@torch.inference_mode()
def decode_batched(
    tokenizer: Tokenizer, tokens: Tokens, batch_size: int = 16, progress: bool = True, precision: str = "fp32"
) -> torch.Tensor:
    """Tokens of N images -> (N, 3, H, W) in [-1, 1], float32 on the CPU."""
    tokens.check_range()
    device = device_of(tokenizer)
    out = []
    for s in tqdm(range(0, tokens.batch_size, batch_size), desc="decode", disable=not progress, leave=False):
        with autocast(device, precision):
            out.append(tokenizer.decode(tokens[s : s + batch_size].to(device)).float().cpu())
    return torch.cat(out)
