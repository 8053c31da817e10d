"""`Tokens`, the one type every tokenizer returns and every decoder and AR model reads."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vtok.errors import VtokError
from vtok.io import atomic_path, check_regular_file, write_safetensors

TOKEN_FILE_FORMAT = "vtok.tokens/1"


@dataclass
class Tokens:
    """Discrete tokens of a batch of images: everything needed to decode them.

    Attributes:
        ids: (B, L, C) int64: L positions, C codes per position.
        codebook_sizes: length C; ``ids[..., c]`` lies in ``[0, codebook_sizes[c])``.
        grid: (h, w) with h * w == L for 2D tokenizers (the last scale for
            multi-scale layouts); None for 1D sequences.
        lengths: (B,) valid prefix length per sample for variable-length 1D tokens.
        scales: multi-scale layouts: L = sum(h * w), scales concatenated coarse to fine.
    """

    ids: torch.Tensor
    codebook_sizes: tuple[int, ...]
    grid: tuple[int, int] | None
    lengths: torch.Tensor | None = None
    scales: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        self.codebook_sizes = tuple(int(s) for s in self.codebook_sizes)
        self.grid = None if self.grid is None else (int(self.grid[0]), int(self.grid[1]))
        if self.scales is not None:
            self.scales = tuple((int(h), int(w)) for h, w in self.scales)
        if self.ids.dim() != 3 or self.ids.dtype != torch.long:
            raise VtokError(f"token ids must be int64 of shape (B, L, C), got {self.ids.dtype} {tuple(self.ids.shape)}")
        _, length, depth = self.ids.shape
        if depth != len(self.codebook_sizes):
            raise VtokError(f"token ids carry {depth} codes per position but {len(self.codebook_sizes)} codebook sizes")
        expected = None
        if self.scales is not None:
            expected = sum(h * w for h, w in self.scales)
        elif self.grid is not None:
            expected = self.grid[0] * self.grid[1]
        if expected is not None and expected != length:
            raise VtokError(f"token layout needs {expected} positions, ids have {length}")
        if self.lengths is not None:
            if self.lengths.shape != (self.ids.shape[0],):
                raise VtokError(
                    f"lengths must have shape (B,) = ({self.ids.shape[0]},), got {tuple(self.lengths.shape)}"
                )
            if bool(((self.lengths < 1) | (self.lengths > length)).any()):
                raise VtokError(f"lengths must lie in [1, {length}]")

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    @property
    def num_positions(self) -> int:
        return self.ids.shape[1]

    def check_range(self) -> None:
        """Raise a :class:`VtokError` if any id lies outside its codebook."""
        sizes = torch.tensor(self.codebook_sizes, device=self.ids.device)
        bad = (self.ids < 0) | (self.ids >= sizes)
        if bool(bad.any()):
            b, pos, c = (int(v) for v in bad.nonzero()[0])
            raise VtokError(
                f"token id {int(self.ids[b, pos, c])} at sample {b}, position {pos}, code {c} "
                f"is outside codebook {c} of size {self.codebook_sizes[c]}"
            )

    def to(self, device: torch.device | str) -> Tokens:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return dataclasses.replace(self, ids=self.ids.to(device), lengths=lengths)

    def __getitem__(self, index: int | slice | torch.Tensor) -> Tokens:
        """Select samples along the batch dimension, keeping the layout."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        lengths = None if self.lengths is None else self.lengths[index]
        return dataclasses.replace(self, ids=self.ids[index], lengths=lengths)

    def prefix(self, lengths: torch.Tensor) -> Tokens:
        """1D tokens kept up to ``lengths`` (B,) per sample; ids past each length become 0 (padding)."""
        lengths = lengths.to(self.ids.device)
        keep = torch.arange(self.num_positions, device=self.ids.device)[None, :, None] < lengths[:, None, None]
        return dataclasses.replace(self, ids=self.ids * keep, lengths=lengths)

    def levels(self, depth: int) -> Tokens:
        """The first ``depth`` codes of every position (residual levels): a coarser token set."""
        if not 1 <= depth <= len(self.codebook_sizes):
            raise VtokError(f"depth must lie in [1, {len(self.codebook_sizes)}], got {depth}")
        return dataclasses.replace(
            self, ids=self.ids[..., :depth].contiguous(), codebook_sizes=self.codebook_sizes[:depth]
        )

    @staticmethod
    def cat(parts: list[Tokens]) -> Tokens:
        """Concatenate along the batch; all parts must share one layout."""
        first = parts[0]
        for p in parts[1:]:
            if (p.codebook_sizes, p.grid, p.scales, p.num_positions) != (
                first.codebook_sizes,
                first.grid,
                first.scales,
                first.num_positions,
            ):
                raise VtokError("cannot concatenate tokens of different layouts")
        lengths = None if first.lengths is None else torch.cat([p.lengths for p in parts])
        return dataclasses.replace(first, ids=torch.cat([p.ids for p in parts]), lengths=lengths)

    def layout(self) -> dict[str, Any]:
        """The JSON-able description of everything but the ids."""
        return {
            "codebook_sizes": list(self.codebook_sizes),
            "grid": None if self.grid is None else list(self.grid),
            "scales": None if self.scales is None else [list(s) for s in self.scales],
        }


@dataclass
class TokenFile:
    """What a token file holds besides the tokens."""

    tokens: Tokens
    tokenizer_hash: str
    labels: torch.Tensor | None = None
    names: list[str] | None = None


def save_tokens(
    path: str | Path,
    tokens: Tokens,
    tokenizer_hash: str,
    labels: torch.Tensor | None = None,
    names: list[str] | None = None,
) -> None:
    """Write tokens as safetensors (atomically): ids, lengths, labels and the layout in metadata."""
    tensors = {"ids": tokens.ids.contiguous().cpu()}
    if tokens.lengths is not None:
        tensors["lengths"] = tokens.lengths.long().contiguous().cpu()
    if labels is not None:
        tensors["labels"] = labels.long().contiguous().cpu()
    metadata = {
        "format": TOKEN_FILE_FORMAT,
        "layout": json.dumps(tokens.layout()),
        "tokenizer_hash": tokenizer_hash,
        "names": json.dumps(names or []),
    }
    with atomic_path(path) as tmp:
        write_safetensors(tensors, tmp, metadata=metadata)


MAX_CODES = 2**31 - 1  # ids are stored as int64 but a codebook past this is no codebook vtok can build
MAX_SIDE = 2**16  # a token grid side: 65,536 positions a side is past any image vtok reads


def _ints(value: Any, count: int | None, low: int, high: int) -> bool:
    return (
        isinstance(value, list)
        and (count is None or len(value) == count)
        and all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value)
    )


def check_layout(layout: Any, where: str) -> dict[str, Any]:
    """A token layout read from a file (a token file's or a shard index's), checked against the one schema.

    ``{"codebook_sizes": [K, ...] (1 to 64 sizes, each in [1, 2**31 - 1]), "grid": [h, w] or null,
    "scales": [[h, w], ...] or null}``, sides in [1, 65536]. Anything else is one line naming ``where``.
    """
    if not isinstance(layout, dict) or not {"codebook_sizes", "grid", "scales"} <= set(layout):
        raise VtokError(f"{where}: its layout must be a mapping with codebook_sizes, grid and scales")
    sizes, grid, scales = layout["codebook_sizes"], layout["grid"], layout["scales"]
    if not (_ints(sizes, None, 1, MAX_CODES) and 1 <= len(sizes) <= 64):
        raise VtokError(
            f"{where}: layout.codebook_sizes must be 1 to 64 integers in [1, {MAX_CODES}], got {sizes!r}"[:300]
        )
    if grid is not None and not _ints(grid, 2, 1, MAX_SIDE):
        raise VtokError(f"{where}: layout.grid must be null or two integers in [1, {MAX_SIDE}], got {grid!r}"[:300])
    if scales is not None and not (
        isinstance(scales, list) and 1 <= len(scales) <= 64 and all(_ints(x, 2, 1, MAX_SIDE) for x in scales)
    ):
        raise VtokError(f"{where}: layout.scales must be null or 1 to 64 pairs [h, w] of positive sides"[:300])
    return layout


def check_names(names: Any, where: str) -> list[str] | None:
    """A token file's ``names``: a list of strings without NUL (file names of the images), or empty."""
    if names in (None, []):
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and "\0" not in n and len(n) < 4096 for n in names):
        raise VtokError(f"{where} is a damaged token file: its names must be a list of file names")
    return names


def load_tokens(path: str | Path, expect: Any | None = None) -> TokenFile:
    """Read a token file written by :func:`save_tokens`; one-line errors for anything else.

    With ``expect`` (a tokenizer), a file written by any other tokenizer is refused:
    its ids would decode to noise.
    """
    path = Path(path)
    check_regular_file(path, "token file")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise VtokError(f"{path} is not a token file (not safetensors: {err})") from None
    if metadata.get("format") != TOKEN_FILE_FORMAT or "ids" not in tensors:
        raise VtokError(f"{path} is not a vtok token file (format {metadata.get('format')!r})")
    try:
        layout = check_layout(json.loads(metadata["layout"]), f"{path} is a damaged token file")
        tokens = Tokens(
            ids=tensors["ids"],
            codebook_sizes=tuple(layout["codebook_sizes"]),
            grid=None if layout["grid"] is None else tuple(layout["grid"]),
            lengths=tensors.get("lengths"),
            scales=None if layout["scales"] is None else tuple(tuple(s) for s in layout["scales"]),
        )
    except (KeyError, TypeError, ValueError, RecursionError) as err:
        raise VtokError(f"{path} is a damaged token file (its layout: {err.__class__.__name__})") from None
    try:
        names = check_names(json.loads(metadata.get("names", "[]")), str(path))
    except (ValueError, RecursionError):
        raise VtokError(f"{path} is a damaged token file (its names are not JSON)") from None
    count = tokens.ids.shape[0]
    for what, value in (("names", names), ("labels", tensors.get("labels")), ("lengths", tokens.lengths)):
        if value is not None and len(value) != count:
            raise VtokError(f"{path} is a damaged token file: {len(value)} {what} for {count} images")
    file = TokenFile(tokens, metadata.get("tokenizer_hash", ""), tensors.get("labels"), names)
    if expect is not None and file.tokenizer_hash != expect.fingerprint():
        raise VtokError(
            f"{path} was written by another tokenizer ({file.tokenizer_hash}, this one is "
            f"{expect.fingerprint()}); decode with the tokenizer that encoded it"
        )
    return file
