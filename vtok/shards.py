"""Token shards: a dataset encoded once, read memory-mapped by AR training.

``write_shards`` encodes an image set (``builtin`` or a folder, class = first-level
subfolder as in ImageNet) into ``shard_00000.safetensors, ...`` plus ``index.json``.
Each shard holds ``ids`` (N, L, C) in the smallest integer type that fits,
``labels`` (N,), ``lengths`` for variable-length tokens, and ``ids_flip`` (the
horizontally flipped image's tokens, as LlamaGen extracts them). Shards are written
atomically and an interrupted run resumes at the first missing shard.

``TokenShards`` opens them with safetensors' ``safe_open`` (mmap) and slices single
rows, so a token set larger than memory trains.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from vtok.builtin import builtin_crops, photo_names
from vtok.data import list_images
from vtok.errors import VtokError, one_line
from vtok.io import atomic_path, write_safetensors
from vtok.ranks import Ranks, my_shards
from vtok.streaming import Batch, ImageFiles, file_batches, stream_images, to_device
from vtok.tokens import TOKEN_FILE_FORMAT, check_layout

SHARD_INDEX = "index.json"
INDEX_FORMAT = "vtok.token-shards/1"


def labelled_items(source: str) -> tuple[list[tuple[str, Any, int]], list[str]]:
    """(name, image or path, class id) of a data source, and the class names.

    ``builtin``: the train crops, one class per photograph. A folder: one class per
    first-level subfolder (sorted, ImageNet style); images directly inside it get
    class 0 of a single class named after the folder.
    """
    if source == "builtin":
        classes = photo_names("train")
        items = [(name, image, classes.index(name.rsplit("_", 1)[0])) for name, image in builtin_crops("train", 256)]
        return items, classes
    root = Path(source)
    files = list_images(root)
    if root.is_dir():
        tops = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
        if tops:
            files = [f for f in files if len(f.relative_to(root).parts) > 1]
            return [(str(f.relative_to(root)), f, tops.index(f.relative_to(root).parts[0])) for f in files], tops
    return [(str(f), f, 0) for f in files], [root.stem]


def _int_type(sizes: tuple[int, ...]) -> torch.dtype:
    top = max(sizes) + 1  # room for an end token
    return torch.int16 if top <= 2**15 else torch.int32


def write_shards(
    tokenizer,
    source: str,
    size: int,
    out: str | Path,
    shard_size: int = 10_000,
    flip: bool = True,
    batch_size: int = 16,
    progress: bool = True,
    tokenizer_dir: str | Path | None = None,
    workers: int = 0,
    precision: str = "fp32",
    ranks: Ranks | None = None,
) -> dict[str, Any]:
    """Encode ``source`` at ``size`` x ``size`` (ADM center crop) into shards in ``out``; returns the index.

    ``tokenizer_dir``, the tokenizer's folder, is recorded so AR training can decode its samples.
    ``workers`` DataLoader processes decode the images. Under ``accelerate launch`` rank r
    writes shards k with k % world == r and rank 0 writes the index once all are there;
    shards already written for this tokenizer are kept, so a rerun on any number of ranks
    resumes.
    """
    from vtok.pipeline import device_of

    ranks = ranks or Ranks()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    items, classes = labelled_items(source)
    fingerprint = tokenizer.fingerprint()
    names = [f"shard_{k:05d}.safetensors" for k in range(-(-len(items) // shard_size))]
    todo = [k for k in my_shards(len(names), ranks) if not _written(out / names[k], fingerprint)]
    # One loader over every batch of this rank's missing shards, so the workers run on across shard ends.
    plan = [
        (k, b)
        for k in todo
        for b in file_batches(min(shard_size, len(items) - k * shard_size), batch_size, k * shard_size)
    ]
    dataset = ImageFiles([item for _, item, _ in items], size)
    device = device_of(tokenizer)
    loader = stream_images(dataset, [b for _, b in plan], workers, pin_memory=device.type == "cuda")
    shard_of_batch = [k for k, _ in plan]
    groups = itertools.groupby(zip(shard_of_batch, loader, strict=True), key=lambda pair: pair[0]) if plan else ()
    for k, group in tqdm(groups, total=len(todo), desc="shards", disable=not progress or not ranks.main):
        batches = (batch for _, batch in group)  # lazily: a shard's images are never all in memory at once
        capacity = min(shard_size, len(items) - k * shard_size)
        tensors, layout, skipped = _encode_batches(tokenizer, batches, items, flip, device, precision, capacity)
        meta = {"format": TOKEN_FILE_FORMAT, "layout": json.dumps(layout), "tokenizer_hash": fingerprint}
        with atomic_path(out / names[k]) as tmp:
            write_safetensors(tensors, tmp, metadata=meta)
        if skipped:
            tqdm.write(f"skipped {len(skipped)} unreadable images: {', '.join(skipped[:3])}")
    ranks.barrier()
    if ranks.main:
        _write_index(out, names, fingerprint, tokenizer_dir, classes, size, flip, source)
    ranks.barrier()
    return json.loads((out / SHARD_INDEX).read_text())


def _written(path: Path, fingerprint: str) -> bool:
    """A shard written earlier for this tokenizer (shards are written atomically, so it is whole)."""
    return path.is_file() and _shard_meta(path).get("tokenizer_hash") == fingerprint


def _write_index(
    out: Path, names: list[str], fingerprint: str, tokenizer_dir, classes: list[str], size: int, flip: bool, source: str
) -> None:
    """``index.json`` of the shards every rank wrote, read back from the files themselves."""
    count = 0
    for name in names:
        with safe_open(str(out / name), "pt") as f:
            count += f.get_slice("labels").get_shape()[0]
    index = {
        "format": INDEX_FORMAT,
        "shards": names,
        "count": count,
        "layout": json.loads(_shard_meta(out / names[0])["layout"]),
        "tokenizer_hash": fingerprint,
        "tokenizer": None if tokenizer_dir is None else str(Path(tokenizer_dir).resolve()),
        "classes": classes,
        "image_size": size,
        "flip": flip,
        "source": source,
    }
    with atomic_path(out / SHARD_INDEX) as tmp:
        Path(tmp).write_text(json.dumps(index, indent=1) + "\n")


@torch.inference_mode()
def _encode_batches(
    tokenizer,
    batches: Iterable[Batch],
    items: list[tuple[str, Any, int]],
    flip: bool,
    device,
    precision: str,
    capacity: int,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """A shard's tensors from its batches as they load, the token layout and the names of unreadable images.

    The ids go into buffers of the shard's ``capacity`` allocated at its first batch: many small
    long-lived tensors between the model's freed activations would fragment the heap, which then
    grows with the number of images instead of staying at one shard's worth.
    """
    from vtok.fast import autocast

    buffers: dict[str, torch.Tensor] = {}
    lengths, labels, skipped, count = [], [], [], 0
    for batch in batches:
        skipped += [items[i][0] for i, _ in batch.skipped]
        if batch.images is None:
            continue
        x = to_device(batch.images, device)  # (B, 3, S, S)
        with autocast(device, precision):
            tokens = tokenizer.encode(x).to("cpu")
            found = {"ids": tokens.ids}
            if flip:
                found["ids_flip"] = tokenizer.encode(x.flip(-1)).ids.cpu()
        for key, value in found.items():  # (B, L, C)
            if key not in buffers:
                buffers[key] = torch.empty((capacity, *value.shape[1:]), dtype=_int_type(tokens.codebook_sizes))
            buffers[key][count : count + len(value)] = value
        count += len(tokens.ids)
        if tokens.lengths is not None:
            lengths.append(tokens.lengths)
        labels.extend(items[i][2] for i in batch.indices)
    if count == 0:
        raise VtokError("no readable images in this shard")
    tensors = {"ids": buffers["ids"][:count], "labels": torch.tensor(labels, dtype=torch.int32)}
    if lengths:
        tensors["lengths"] = torch.cat(lengths).to(torch.int32)
    if "ids_flip" in buffers:
        tensors["ids_flip"] = buffers["ids_flip"][:count]
    return tensors, tokens.layout(), skipped


def _shard_meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata() or {}


@dataclass
class TokenRow:
    ids: torch.Tensor  # (L, C) int64
    label: int
    length: int | None


class TokenShards:
    """Random access to the rows of a shard folder, memory-mapped."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / SHARD_INDEX
        if not path.is_file():
            raise VtokError(
                f"{self.folder} holds no token shards ({SHARD_INDEX} missing); write them with vtok encode --shards"
            )
        try:
            self.index = json.loads(path.read_text())
        except (ValueError, RecursionError):
            raise VtokError(f"{path} is not valid JSON") from None
        if not isinstance(self.index, dict) or self.index.get("format") != INDEX_FORMAT:
            raise VtokError(f"{path} is not a vtok shard index")
        self.files = [_open_shard(self.folder, name, path) for name in _shard_names(self.index, path)]
        try:
            counts = [f.get_slice("labels").get_shape()[0] for f in self.files]
            self.has_flip = all("ids_flip" in f.keys() for f in self.files)
            self.has_lengths = all("lengths" in f.keys() for f in self.files)
            self.positions = self.files[0].get_slice("ids").get_shape()[1]
        except (SafetensorError, KeyError, IndexError) as err:
            raise VtokError(
                f"{self.folder} holds a damaged shard ({err.__class__.__name__}: no ids or labels)"
            ) from None
        self.offsets = np.cumsum([0, *counts])
        layout = check_layout(self.index.get("layout"), str(path))
        _check_layout_matches_shards(layout, self.files, path)
        self.codebook_sizes = tuple(layout["codebook_sizes"])
        self.grid = None if layout["grid"] is None else tuple(layout["grid"])
        self.scales = layout["scales"]

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def classes(self) -> list[str]:
        return self.index.get("classes", [])

    def row(self, i: int, flipped: bool = False) -> TokenRow:
        s = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - int(self.offsets[s])
        f = self.files[s]
        key = "ids_flip" if flipped and self.has_flip else "ids"
        ids = f.get_slice(key)[j : j + 1][0].long()  # (L, C)
        label = int(f.get_slice("labels")[j : j + 1][0])
        length = int(f.get_slice("lengths")[j : j + 1][0]) if self.has_lengths else None
        return TokenRow(ids, label, length)

    def batch(self, indices: list[int], flips: list[bool]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, L, C) ids, (B,) labels, (B,) lengths or None."""
        rows = [self.row(i, f) for i, f in zip(indices, flips, strict=True)]
        lengths = torch.tensor([r.length for r in rows]) if self.has_lengths else None
        return torch.stack([r.ids for r in rows]), torch.tensor([r.label for r in rows]), lengths


def _shard_names(index: dict[str, Any], path: Path) -> list[str]:
    """The index's shard file names: plain names inside its folder (a path elsewhere is refused, not followed)."""
    names = index.get("shards")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise VtokError(f"{path} lists no shard files")
    for name in names:
        if Path(name).name != name or name in ("", ".", ".."):
            raise VtokError(
                one_line(f"{path} lists the shard {name!r} outside its folder; a shard index names files beside it")
            )
    return names


def _open_shard(folder: Path, name: str, index: Path):
    file = folder / name
    if file.is_symlink() or not file.is_file():
        raise VtokError(one_line(f"{index} lists the shard {name}, which is not a file in {folder}"))
    try:
        return safe_open(str(file), "pt")
    except (SafetensorError, OSError) as err:
        raise VtokError(
            one_line(f"shard {file} is not a readable safetensors file ({err.__class__.__name__})")
        ) from None


def _check_layout_matches_shards(layout: dict[str, Any], files: list, index: Path) -> None:
    """The index's layout must be the one its shards were written with, and fit their id type
    (a layout edited to claim a million codes would build a GPT of that vocabulary before anything failed)."""
    for f in files:
        try:
            written = json.loads((f.metadata() or {}).get("layout", "null"))
        except ValueError:
            written = None
        if written != layout:
            raise VtokError(f"{index}: its layout differs from the layout its shards were written with")
        dtype = f.get_slice("ids").get_dtype()
        limit = {"I16": 2**15, "I32": 2**31}.get(dtype, 2**63)  # _int_type: room for an end token
        if max(layout["codebook_sizes"]) + 1 > limit:
            raise VtokError(f"{index}: its layout claims {max(layout['codebook_sizes'])} codes, its ids are {dtype}")


def shard_batches(
    shards: TokenShards, batch_size: int, seed: int, start: int, rank: int = 0, world: int = 1, flip: bool = True
):
    """Endless batches as a pure function of (seed, batch number): resuming at ``start`` continues the same order.

    Each epoch is a seeded permutation; rank r takes every world-th batch.
    """
    n = len(shards)
    per_epoch = max(1, n // (batch_size * world))
    k = start
    while True:
        epoch, pos = divmod(k, per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(n)
        first = (pos * world + rank) * batch_size
        idx = [int(order[(first + i) % n]) for i in range(batch_size)]
        flips = np.random.default_rng([seed, epoch, pos, rank]).random(batch_size) < 0.5
        yield shards.batch(idx, [bool(f) and flip for f in flips])
        k += 1


def check_trained_on(model_dir: str | Path, tokenizer) -> None:
    """A one-line error where the AR model in ``model_dir`` was trained on another tokenizer's tokens."""
    trained_on = Path(model_dir) / "shards.json"
    if not trained_on.is_file():
        return
    expected = json.loads(trained_on.read_text()).get("tokenizer_hash")
    if expected and expected != tokenizer.fingerprint():
        raise VtokError(
            f"{model_dir} was trained on tokens of tokenizer {expected}; this tokenizer is {tokenizer.fingerprint()}"
        )
