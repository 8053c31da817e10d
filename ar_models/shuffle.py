"""Token-Shuffle: s x s windows of grid tokens as one transformer step (Ma et al. 2025, arXiv 2504.17789).

Token-Shuffle (the paper's method section: the token-shuffle / token-unshuffle operations and their
pipeline figure) cuts the steps of an AR image transformer by s^2 without changing its vocabulary: before the transformer, "token-shuffle" merges the s x s tokens
of each local window along the channel dimension and fuses them with an MLP into one input; after it,
"token-unshuffle" expands each output back into s^2 positions with an MLP, and every position gets its own
logits over the codebook from the shared head. The s^2 tokens of a window are drawn together, in one step,
each from its own distribution: sampling emits a window per step (the paper's design; its experiments
ablate the window size, quality falling as s grows, and settle on s = 2).

Here the window is a documented option of the GPT (``shuffle: s``), composed from this module; the model's
token embeddings and heads are the plain ones, applied to each of a window's s^2 positions:

- input: the s^2 per-position embeddings ``(B, T, s^2, D)`` concatenated ``(B, T, s^2 D)`` and mapped by an
  MLP to the model width ``(B, T, D)``;
- output: the hidden state ``(B, T, D)`` mapped by an MLP to ``(B, T, s^2, D)``, one hidden state per
  position, each read out by the model's head (or, for stacked codes, its depth transformer).

The paper reduces each token's dimension by a linear layer before concatenating and adds residual MLP
blocks on both sides; at vtok's model widths the concatenation fits, so the fusion is one MLP of the full
s^2 D input (the reduction is its first layer), and a residual MLP refines each unshuffled position.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from vtok.ar_models.layers import RMSNorm
from vtok.errors import VtokError


def to_windows(ids: torch.Tensor, grid: tuple[int, int] | list[int], s: int) -> torch.Tensor:
    """Raster-order grid tokens into windows: (B, h*w, C) -> (B, (h/s)*(w/s), s*s, C).

    Windows in raster order over the (h/s, w/s) window grid; a window's s^2 tokens in raster order inside it.
    """
    h, w = grid
    return rearrange(ids, "b (hh s1 ww s2) c -> b (hh ww) (s1 s2) c", hh=h // s, ww=w // s, s1=s, s2=s)


def from_windows(ids: torch.Tensor, grid: tuple[int, int] | list[int], s: int) -> torch.Tensor:
    """The inverse of :func:`to_windows`: (B, (h/s)*(w/s), s*s, ...) -> (B, h*w, ...)."""
    h, w = grid
    return rearrange(ids, "b (hh ww) (s1 s2) ... -> b (hh s1 ww s2) ...", hh=h // s, ww=w // s, s1=s, s2=s)


def check_window(s: int, grid: list[int] | None, scales: list | None, end_token: bool) -> None:
    """A one-line error where a window of ``s`` does not fit the layout (s = 1 always fits)."""
    if s == 1:
        return
    if grid is None or scales is not None or end_token:
        raise VtokError(f"gpt shuffle: {s} needs a single 2D grid of tokens (not 1D, multi-scale or variable length)")
    if grid[0] % s or grid[1] % s:
        raise VtokError(f"gpt shuffle: {s} must divide the token grid {list(grid)}")


class _MLP(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int):
        super().__init__()
        self.fc1 = nn.Linear(dim_in, hidden)
        self.fc2 = nn.Linear(hidden, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class TokenShuffle(nn.Module):
    """The token-shuffle (input) and token-unshuffle (output) MLPs of an s x s window.

    Args:
        window: s; a step covers s * s tokens.
        dim: the transformer width D.
    """

    def __init__(self, window: int, dim: int):
        super().__init__()
        self.window = window
        self.group = window * window
        self.fuse = _MLP(self.group * dim, dim, dim)  # token-shuffle: s^2 D -> D
        self.split = _MLP(dim, dim, self.group * dim)  # token-unshuffle: D -> s^2 D
        self.refine_norm = RMSNorm(dim)
        self.refine = _MLP(dim, dim, dim)  # a residual MLP on each unshuffled position
        self.out_norm = RMSNorm(dim)

    def shuffle(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, s^2, D) token embeddings of T windows -> (B, T, D) transformer inputs."""
        return self.fuse(rearrange(x, "b t g d -> b t (g d)"))  # (B, T, D)

    def unshuffle(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (..., D) transformer outputs -> (..., s^2, D), one normalised state per window position."""
        x = rearrange(self.split(hidden), "... (g d) -> ... g d", g=self.group)  # (..., s^2, D)
        x = x + self.refine(self.refine_norm(x))
        return self.out_norm(x)
