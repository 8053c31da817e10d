"""Batched encode / decode / reconstruct over many images, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from vtok.interfaces import Tokenizer
from vtok.tokens import Tokens


def reconstruct_with(tokenizer: Tokenizer, num_tokens: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """images (B, 3, H, W) in [-1, 1] -> decode(encode(images)) in float32, clamped to [-1, 1]."""
    kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}

    def run(images: torch.Tensor) -> torch.Tensor:
        return tokenizer.decode(tokenizer.encode(images, **kwargs)).float().clamp(-1, 1)

    return run


@torch.inference_mode()
def encode_batched(
    tokenizer: Tokenizer,
    images: torch.Tensor,
    batch_size: int = 16,
    progress: bool = True,
    num_tokens: int | None = None,
) -> Tokens:
    """images: (N, 3, H, W) in [-1, 1] -> Tokens of all N images (1D tokenizers: the first ``num_tokens``)."""
    kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
    parts = [
        tokenizer.encode(chunk, **kwargs)
        for chunk in tqdm(images.split(batch_size), desc="encode", disable=not progress, leave=False)
    ]
    return Tokens.cat(parts)


@torch.inference_mode()
def decode_batched(tokenizer: Tokenizer, tokens: Tokens, batch_size: int = 16, progress: bool = True) -> torch.Tensor:
    """Tokens of N images -> (N, 3, H, W) in [-1, 1]."""
    tokens.check_range()
    starts = range(0, tokens.batch_size, batch_size)
    out = [
        tokenizer.decode(tokens[s : s + batch_size]).float()
        for s in tqdm(starts, desc="decode", disable=not progress, leave=False)
    ]
    return torch.cat(out)
