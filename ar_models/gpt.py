"""A LlamaGen-style class-conditional GPT over the tokens of any vtok tokenizer.

The token layout comes from ``Tokens`` (the model's config records it, filled from
the token shards at training time):

- grids (VQ): raster order, 2D rotary positions;
- stacks of C codes per position (RQ depth, DualToken's two codebooks): the C code
  embeddings are summed into one input per position, and a small depth
  transformer predicts the C codes of a position in turn (RQ-Transformer);
- 1D sequences (TiTok / FlexTok): 1D rotary positions; with ``end_token`` an
  end-of-image token lets the model choose the length;
- multi-scale layouts (VAR's ``msvq``, TokenFlow: ``scales`` set, ``grid`` the last
  scale): every scale's positions concatenated coarse to fine, predicted token by
  token. A token's rotary position is the centre of the area it covers on the last
  scale's grid, so a fine token and the coarse tokens it refines lie a short
  relative distance apart (the structure of a residual multi-scale code), which 1D
  positions over the concatenation would hide. Tokens of different scales can share
  a centre (scale 1's is scale 3's middle token), so each step also adds a learned
  embedding of the scale it predicts, as VAR's level embedding does.

The class (or a learned null class for classifier-free guidance and for the
unconditional model) is a one-token prefix, as in LlamaGen.

With ``shuffle: s`` > 1 (grids and stacks of codes on a grid), one step covers an s x s window of
tokens (Token-Shuffle, :mod:`vtok.ar_models.shuffle`): the window's s^2 embeddings are fused into one
input and each step's output is split into s^2 positions, each read out by the plain head (or depth
transformer); a step's rotary position is its window's centre on the grid. Internally every layout is
handled in steps of ``group`` = s^2 positions, (B, T, G, C); a plain model has G = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.ar_models.layers import Block, KVCache, RMSNorm, rope_angles, swiglu_hidden
from vtok.ar_models.shuffle import TokenShuffle, check_window, from_windows, to_windows
from vtok.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, UNIT, ranged
from vtok.errors import VtokError
from vtok.pretrained import Pretrained
from vtok.registry import register
from vtok.tokens import Tokens


@register("model", "gpt")
class GPT(Pretrained, nn.Module):
    """Decoder-only transformer: RMSNorm, SwiGLU, rotary positions, class prefix."""

    trained_by = "ar"  # the registered trainer that trains it (``vtok train``)

    @dataclass
    class Config:
        # Codes of each id column: one entry per code of a position (more than one: stacked codes, predicted in turn by
        # the depth transformer). Training fills it, grid, length, scales and end_token from the token shards.
        codebook_sizes: list[int] = ranged([16384], AT_LEAST_1)
        # [h, w] token grid in raster order, with 2D rotary positions (null for 1D layouts)
        grid: list[int] | None = ranged([16, 16], AT_LEAST_1)
        length: int | None = ranged(None, AT_LEAST_1)  # positions of a 1D layout (grid must be null)
        # multi-scale layouts: [h, w] coarse to fine, the last one the grid
        scales: list[list[int]] | None = ranged(None, AT_LEAST_1)
        end_token: bool = False  # variable length: an end-of-image token ends a sample
        num_classes: int = ranged(1000, NON_NEGATIVE)  # 0: unconditional
        dim: int = ranged(768, AT_LEAST_1)  # transformer width (GPT-B 768, GPT-L 1024)
        depth: int = ranged(12, AT_LEAST_1)  # transformer blocks of the main model
        # Attention heads per block (dim must be a multiple; head width dim / heads)
        heads: int = ranged(12, AT_LEAST_1)
        depth_layers: int = ranged(2, NON_NEGATIVE)  # the depth transformer for C > 1 codes per position
        # Share of training samples whose class is replaced by the null class, which CFG sampling needs
        class_dropout: float = ranged(0.1, UNIT)
        # Dropout on the inputs, the attention weights and the MLP outputs (training only)
        dropout: float = ranged(0.0, UNIT)
        # Base of the rotary frequencies (the wavelengths grow as rope_base^(2i / head width))
        rope_base: float = ranged(10000.0, POSITIVE)
        # LlamaGen's rotary table has (cos, sin) = (0, 0) at the class positions, which zeroes the class token's
        # query and key; false gives the class positions the identity rotation (angle 0) instead.
        zero_prefix_rotary: bool = False
        # Token-Shuffle window s: one transformer step covers an s x s window of grid tokens (1: off)
        shuffle: int = ranged(1, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        if (cfg.grid is None) == (cfg.length is None):
            raise VtokError("a gpt config needs exactly one of grid [h, w] or length")
        self.cfg = cfg
        self.positions = self._check_layout(cfg)
        check_window(cfg.shuffle, cfg.grid, cfg.scales, cfg.end_token)
        self.group = cfg.shuffle * cfg.shuffle  # token positions per step
        self.steps = self.positions // self.group  # sequence steps of a sample, the class prefix and end excluded
        self.token_shuffle = TokenShuffle(cfg.shuffle, cfg.dim) if cfg.shuffle > 1 else None
        self.codes = len(cfg.codebook_sizes)
        self.end_id = cfg.codebook_sizes[0] if cfg.end_token else None
        # The end token is one more id of a position's first code; the later codes of the end step carry no target.
        vocab = [k + (1 if cfg.end_token and c == 0 else 0) for c, k in enumerate(cfg.codebook_sizes)]
        self.tok_embeddings = nn.ModuleList(nn.Embedding(k, cfg.dim) for k in vocab)
        self.cls_embedding = nn.Embedding(cfg.num_classes + 1, cfg.dim)  # the last row is the null class
        self.drop = nn.Dropout(cfg.dropout)
        hidden = swiglu_hidden(cfg.dim)
        self.layers = nn.ModuleList(Block(cfg.dim, cfg.heads, hidden, cfg.dropout) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.dim)
        if self.codes == 1:
            self.output = nn.Linear(cfg.dim, vocab[0], bias=False)
        else:
            self.depth_embeddings = nn.ModuleList(nn.Embedding(k, cfg.dim) for k in vocab[:-1])
            self.depth_pos = nn.Parameter(torch.zeros(self.codes, cfg.dim))
            self.depth_layers = nn.ModuleList(
                Block(cfg.dim, cfg.heads, hidden, cfg.dropout) for _ in range(cfg.depth_layers)
            )
            self.depth_norm = RMSNorm(cfg.dim)
            self.depth_heads = nn.ModuleList(nn.Linear(cfg.dim, k, bias=False) for k in vocab)
        if cfg.scales is not None:  # the scale each step predicts (step s predicts token s)
            sizes = [h * w for h, w in cfg.scales]
            self.scale_embedding = nn.Embedding(len(sizes), cfg.dim)
            step_scale = torch.arange(len(sizes)).repeat_interleave(torch.tensor(sizes))  # (L,)
            self.register_buffer("step_scale", step_scale, persistent=False)
        self.register_buffer("angles", self._angles(), persistent=False)
        gain = torch.ones(self.angles.shape[0], 1)
        gain[0] = 0.0 if cfg.zero_prefix_rotary else 1.0  # row 0 is the class prefix
        self.register_buffer("rope_gain", gain, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @staticmethod
    def _check_layout(cfg: Config) -> int:
        """Token positions of the layout; a one-line error where its fields disagree."""
        if cfg.scales is None:
            return cfg.grid[0] * cfg.grid[1] if cfg.grid is not None else cfg.length
        if not cfg.scales or any(len(s) != 2 or min(s) < 1 for s in cfg.scales):
            raise VtokError(f"gpt scales must be a list of [h, w] of at least 1, got {cfg.scales}")
        if cfg.end_token:
            raise VtokError("a multi-scale layout has a fixed length: end_token is for 1D variable-length tokens")
        positions = sum(h * w for h, w in cfg.scales)
        if cfg.grid is not None and list(cfg.grid) != list(cfg.scales[-1]):
            raise VtokError(f"a multi-scale gpt's grid {cfg.grid} must be its last scale {cfg.scales[-1]}")
        if cfg.length is not None and cfg.length != positions:
            raise VtokError(f"a multi-scale gpt's length {cfg.length} must be the scales' {positions} positions")
        return positions

    def _coords(self, steps: int) -> torch.Tensor:
        """(steps, A) rotary coordinates of the tokens: (row, column) on a grid, the index on a sequence."""
        if self.cfg.grid is None:
            return torch.arange(steps, dtype=torch.float64)[:, None]  # (S, 1)
        h, w = self.cfg.grid
        s = self.cfg.shuffle  # a window's step at the window's centre
        scales = self.cfg.scales or [[h // s, w // s]]
        coords = []
        for sh, sw in scales:  # each scale's token at the centre of its area on the last grid
            rows = (torch.arange(sh, dtype=torch.float64) + 0.5) * h / sh - 0.5
            cols = (torch.arange(sw, dtype=torch.float64) + 0.5) * w / sw - 0.5
            coords.append(torch.cartesian_prod(rows, cols).reshape(-1, 2))  # (sh * sw, 2), raster order
        coords = torch.cat(coords)
        if steps > len(coords):  # the end token's step continues the raster
            idx = torch.arange(len(coords), steps)
            coords = torch.cat([coords, torch.stack([idx // w, idx % w], dim=1).double()])
        return coords  # (S, 2)

    def _angles(self) -> torch.Tensor:
        """(1 + S, head_dim / 2) angles: the class prefix (none), then each token's coordinates."""
        head_dim = self.cfg.dim // self.cfg.heads
        coords = self._coords(self.max_steps)
        prefix = torch.full((1, coords.shape[1]), -1.0, dtype=coords.dtype)
        return rope_angles(torch.cat([prefix, coords]), head_dim, self.cfg.rope_base)

    @property
    def max_steps(self) -> int:
        """Sequence steps a sample can have (positions / s^2 under Token-Shuffle), the end token included."""
        return self.steps + (1 if self.cfg.end_token else 0)

    # --- layout -------------------------------------------------------------------

    def check_tokens(self, tokens: Tokens) -> None:
        """Refuse tokens whose layout differs from the one this model was built for."""
        grid = None if self.cfg.grid is None else tuple(self.cfg.grid)
        if tuple(tokens.codebook_sizes) != tuple(self.cfg.codebook_sizes) or tokens.grid != grid:
            raise VtokError(
                f"tokens (codebooks {tokens.codebook_sizes}, grid {tokens.grid}, {tokens.num_positions} positions) do "
                f"not fit this model (codebooks {tuple(self.cfg.codebook_sizes)}, grid {grid}, {self.positions})"
            )
        if tokens.num_positions != self.positions:
            raise VtokError(f"tokens have {tokens.num_positions} positions, this model {self.positions}")
        scales = None if self.cfg.scales is None else tuple(tuple(s) for s in self.cfg.scales)
        if tokens.scales != scales:
            raise VtokError(f"tokens have scales {tokens.scales}, this model {scales}")
        if tokens.lengths is not None and not self.cfg.end_token:
            raise VtokError("variable-length tokens need a model with end_token: true")

    def make_tokens(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> Tokens:
        scales = None if self.cfg.scales is None else tuple(tuple(s) for s in self.cfg.scales)
        grid = None if self.cfg.grid is None else tuple(self.cfg.grid)
        return Tokens(ids, tuple(self.cfg.codebook_sizes), grid, lengths, scales)

    # --- the network --------------------------------------------------------------

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T, C) ids -> (B, T, D): the sum of each code's embedding."""
        return sum(emb(ids[..., c]) for c, emb in enumerate(self.tok_embeddings))

    def to_steps(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L, C) token ids in the layout's order -> (B, T, G, C): T steps of G = s^2 positions each."""
        if self.token_shuffle is None:
            return ids[:, :, None]
        return to_windows(ids, self.cfg.grid, self.cfg.shuffle)

    def from_steps(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_steps` for ids or per-position values: (B, T, G, ...) -> (B, L, ...)."""
        if self.token_shuffle is None:
            return x[:, :, 0]
        return from_windows(x, self.cfg.grid, self.cfg.shuffle)

    def embed_steps(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T, G, C) ids of T steps -> (B, T, D) inputs: a window's embeddings fused under Token-Shuffle."""
        if self.token_shuffle is None:
            return self.embed(ids[:, :, 0])  # (B, T, D)
        return self.token_shuffle.shuffle(self.embed(ids))  # (B, T, G, D) -> (B, T, D)

    def position_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., D) step outputs -> (..., G, D): the state each of a step's G positions is read out from."""
        if self.token_shuffle is None:
            return hidden.unsqueeze(-2)
        return self.token_shuffle.unshuffle(hidden)

    def class_prefix(self, labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """(B, 1, D) class embeddings; None or the null id give the unconditional prefix."""
        if labels is None:
            labels = torch.full((batch,), self.cfg.num_classes, device=device)
        if bool(((labels < 0) | (labels > self.cfg.num_classes)).any()):
            raise VtokError(f"class labels must lie in [0, {self.cfg.num_classes}) (or {self.cfg.num_classes}: null)")
        return self.cls_embedding(labels)[:, None]

    def backbone(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D) inputs at sequence steps [0, T) -> (B, T, D) normalised hidden states."""
        t = x.shape[1]
        cos, sin = self.angles[:t].cos() * self.rope_gain[:t], self.angles[:t].sin() * self.rope_gain[:t]  # (T, hd / 2)
        if self.cfg.scales is not None:
            x = x + self.scale_embedding(self.step_scale[:t])  # (B, T, D): the scale each step predicts
        x = self.drop(x)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)

    def step(self, x: torch.Tensor, pos: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """One cached step: x (B, 1, D) at sequence step ``pos`` (0-dim long tensor) -> (B, D) hidden state."""
        angles, gain = self.angles.index_select(0, pos.view(1)), self.rope_gain.index_select(0, pos.view(1))
        cos, sin = angles.cos() * gain, angles.sin() * gain  # (1, head_dim / 2)
        if self.cfg.scales is not None:
            x = x + self.scale_embedding(self.step_scale.index_select(0, pos.view(1)))  # (B, 1, D)
        for layer, cache in zip(self.layers, caches, strict=True):
            x = layer.step(x, cos, sin, cache, pos)
        return self.norm(x)[:, -1]

    def depth_logits(self, hidden: torch.Tensor, ids: torch.Tensor) -> list[torch.Tensor]:
        """Stacks: (N, D) hidden states and (N, C) codes (teacher forcing) -> C logits (N, K_c)."""
        inputs = [hidden] + [emb(ids[:, c]) for c, emb in enumerate(self.depth_embeddings)]
        x = torch.stack(inputs, dim=1) + self.depth_pos  # (N, C, D)
        zeros = torch.zeros(self.codes, self.cfg.dim // self.cfg.heads // 2, device=x.device)
        cos, sin = zeros.cos(), zeros.sin()
        for layer in self.depth_layers:
            x = layer(x, cos, sin)
        x = self.depth_norm(x)
        return [head(x[:, c]) for c, head in enumerate(self.depth_heads)]

    def forward(self, ids: torch.Tensor, labels: torch.Tensor | None, lengths: torch.Tensor | None = None):
        """Training loss (teacher forcing).

        Args:
            ids: (B, L, C) codes. labels: (B,) classes or None. lengths: (B,) valid
                lengths of variable-length samples.
        Returns:
            (loss, logits): mean cross-entropy over every predicted code (per token, whatever
            the window); logits of the first code (B, L or L + 1, K) for inspection.
        """
        b, length, _ = ids.shape
        if self.training and labels is not None and self.cfg.class_dropout > 0:
            drop = torch.rand(b, device=ids.device) < self.cfg.class_dropout
            labels = torch.where(drop, torch.full_like(labels, self.cfg.num_classes), labels)
        targets = ids
        if self.cfg.end_token:
            lengths = lengths if lengths is not None else torch.full((b,), length, device=ids.device)
            end = torch.full((self.codes,), -100, device=ids.device, dtype=ids.dtype)
            end[0] = self.end_id  # (C,): the end id as the first code, nothing to predict after it
            targets = torch.cat([ids, end.expand(b, 1, -1)], dim=1)  # (B, L + 1, C)
            steps = torch.arange(length + 1, device=ids.device)[None]
            targets = torch.where(steps[..., None] == lengths[:, None, None], end, targets)
            targets = targets.masked_fill(steps[..., None] > lengths[:, None, None], -100)
            targets = targets[:, :, None]  # (B, L + 1, 1, C): one position per step
            inputs = self.embed(targets[:, :-1, 0].clamp(min=0))  # (B, L, D)
        else:
            targets = self.to_steps(ids)  # (B, T, G, C)
            inputs = self.embed_steps(targets[:, :-1])  # (B, T - 1, D)
        x = torch.cat([self.class_prefix(labels, b, ids.device), inputs], dim=1)  # (B, S, D)
        states = self.position_hidden(self.backbone(x))  # (B, S, G, D)
        if self.codes == 1:
            logits = self.output(states).float()  # (B, S, G, K)
            flat = rearrange(logits, "b s g k -> (b s g) k")
            loss = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100)
            return loss, self.from_steps(logits)
        flat_ids = rearrange(targets, "b s g c -> (b s g) c")
        per_code = self.depth_logits(rearrange(states, "b s g d -> (b s g) d"), flat_ids.clamp(min=0))
        losses = [F.cross_entropy(lg.float(), flat_ids[:, c], ignore_index=-100) for c, lg in enumerate(per_code)]
        first = rearrange(per_code[0], "(b s g) k -> b s g k", b=b, g=self.group)
        return sum(losses) / len(losses), self.from_steps(first)

    def adapt_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A GPT's weights for fine-tuning on more classes: old class rows kept, the null class moved to the
        new last row, new classes initialised from the mean class embedding."""
        old = state.get("cls_embedding.weight")
        new = self.cls_embedding.weight
        if old is None or old.shape == new.shape or old.shape[1] != new.shape[1] or old.shape[0] > new.shape[0]:
            return state
        grown = old[:-1].mean(0, keepdim=True).expand(new.shape[0], -1).clone()  # (classes + 1, D)
        grown[: old.shape[0] - 1] = old[:-1]
        grown[-1] = old[-1]
        return {**state, "cls_embedding.weight": grown}

    @torch.no_grad()
    def init_embeddings_from(self, tokenizer) -> None:
        """Initialise each code's input embedding from the tokenizer's quantized latents.

        The code vectors (dim d) are mapped to the model width by a fixed random
        orthogonal map (distances between codes are kept) and scaled to the
        embeddings' initial std.
        """
        for c, size in enumerate(self.cfg.codebook_sizes):
            ids = torch.zeros(1, size, self.codes, dtype=torch.long)
            ids[0, :, c] = torch.arange(size)
            z = tokenizer.lookup(Tokens(ids, tuple(self.cfg.codebook_sizes), (1, size))).float()[0]  # (K, d)
            g = torch.Generator().manual_seed(c)
            q, _ = torch.linalg.qr(torch.randn(self.cfg.dim, z.shape[1], generator=g))  # (D, d), orthonormal columns
            proj = q.T  # (d, D)
            e = (z - z.mean(0)) @ proj
            e = e * (0.02 / e.std().clamp(min=1e-8))
            self.tok_embeddings[c].weight[:size].copy_(e)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        window = f", {self.cfg.shuffle}x{self.cfg.shuffle} windows" if self.token_shuffle is not None else ""
        return f"{self.num_params() / 1e6:.1f}M parameters, {self.positions} positions x {self.codes} codes{window}"
