"""Images streamed to a model: files decoded, resized and cropped in DataLoader workers.

``vtok encode``, ``reconstruct`` and ``eval`` read their inputs through
:func:`stream_images`: a :class:`ImageFiles` dataset (a list of image files or PIL
images -> ``(index, tensor)``) behind a ``torch.utils.data.DataLoader`` whose
workers decode JPEGs while the model runs on the previous batch. Only a few batches
are ever in memory (``prefetch_factor`` per worker), and the heap space the model's
freed activations leave is handed back to the system as it accumulates
(:mod:`vtok.heap`), so memory is bounded in the number of images. The resize and crop are those of the in-process path (ADM's
:func:`~vtok.images.center_crop_arr`), and batches keep the order of the files, so
the tokens are identical with any number of workers.

A worker never raises: an unreadable file comes back as its error line, and the main
process either skips it (named in :attr:`Batch.skipped`) or, for a file the user named
explicitly, stops with that one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from vtok.errors import VtokError
from vtok.heap import release_free_heap
from vtok.images import center_crop_arr, load_image, pil_to_tensor

MAX_DEFAULT_WORKERS = 8  # past this, JPEG decoding outruns any single tokenizer on one device


def default_workers() -> int:
    """``--workers`` default: the CPUs this process may use, at most :data:`MAX_DEFAULT_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(MAX_DEFAULT_WORKERS, cpus)


class ImageFiles(torch.utils.data.Dataset):
    """Image files (or PIL images) -> ``(index, (3, S, S) in [-1, 1] or None, error line or None)``.

    Args:
        items: paths or already opened PIL images, in output order.
        size: ADM resize and center crop to ``size`` x ``size``; None keeps each image's size.
        max_pixels: without ``size``, larger files are refused from their header.
        strict: per item (or for all): an unreadable item stops the run instead of being skipped.
    """

    def __init__(
        self,
        items: Sequence[Path | Image.Image],
        size: int | None,
        max_pixels: int | None = None,
        strict: Sequence[bool] | bool = False,
    ):
        self.items = list(items)
        self.size = size
        self.max_pixels = max_pixels
        self.strict = [strict] * len(self.items) if isinstance(strict, bool) else list(strict)

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> torch.Tensor:
        """Item ``index`` as a (3, S, S) tensor in [-1, 1]; :class:`VtokError` if it cannot be read."""
        item = self.items[index]
        image = item if isinstance(item, Image.Image) else load_image(item, max_pixels=self.max_pixels)
        return pil_to_tensor(image if self.size is None else center_crop_arr(image, self.size))

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.load(index), None
        except VtokError as err:  # sent back as text: an exception raised in a worker arrives with its traceback
            return index, None, str(err)


@dataclass
class Batch:
    """Readable images of one batch of indices, in index order.

    ``images``: (B, 3, S, S) in [-1, 1] (a list when their sizes differ, which the reader
    turns into one error line); ``skipped``: ``(index, error line)`` of unreadable items.
    """

    indices: list[int]
    images: torch.Tensor | list[torch.Tensor] | None
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def pin_memory(self) -> Batch:
        """Called by the DataLoader's pinning thread: page-locked images copy to a GPU asynchronously."""
        if isinstance(self.images, torch.Tensor):
            self.images = self.images.pin_memory()
        return self


def collate(samples: list[tuple[int, torch.Tensor | None, str | None]]) -> Batch:
    """Stack the readable samples of one batch (in the worker, so the main process only moves them)."""
    release_free_heap()  # the previous batch's decoded JPEGs are freed by now
    good = [(i, x) for i, x, _ in samples if x is not None]
    skipped = [(i, err) for i, x, err in samples if x is None]
    tensors = [x for _, x in good]
    if not tensors:
        return Batch([], None, skipped)
    same = len({tuple(x.shape) for x in tensors}) == 1
    return Batch([i for i, _ in good], torch.stack(tensors) if same else tensors, skipped)


def stream_images(
    dataset: ImageFiles,
    batches: Sequence[Sequence[int]],
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """The batches of ``dataset`` named by ``batches`` (lists of indices), decoded by ``workers`` processes.

    Batches come in the order given. Images of different sizes stop the run with one line;
    an unreadable strict item stops it with its error line; the rest are in ``skipped``.
    """
    if workers < 0:
        raise VtokError(f"--workers must be >= 0, got {workers}")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        # Fixed, so the workers do not draw their seeds from the global RNG (nothing here is random,
        # but a caller's later random draws stay the same with and without workers).
        generator=torch.Generator().manual_seed(0),
    )
    shape = None
    for batch in loader:
        release_free_heap()  # the caller's model step on the previous batch is over: its activations are freed
        for index, err in batch.skipped:
            if dataset.strict[index]:
                raise VtokError(err)
        if batch.images is None:
            yield batch
            continue
        images = batch.images
        shapes = {tuple(x.shape) for x in images} if isinstance(images, list) else {tuple(images.shape[1:])}
        shapes |= {shape} if shape is not None else set()
        if len(shapes) > 1:
            raise VtokError(f"inputs have different sizes {sorted(shapes)[:3]}; pass --size to resize and crop them")
        shape = shapes.pop()
        yield batch


def file_batches(count: int, batch_size: int, start: int = 0) -> list[list[int]]:
    """Indices ``start .. start + count - 1`` cut into consecutive batches of ``batch_size``."""
    return [list(range(s, min(s + batch_size, start + count))) for s in range(start, start + count, batch_size)]


def rebatch(batches: Iterator[Batch], batch_size: int) -> Iterator[Batch]:
    """Readable images regrouped into batches of exactly ``batch_size`` (the last may be short).

    The model then sees the batches it would see if every image had been loaded first
    and the stack split, whatever was skipped; at most two batches are held.
    """
    indices: list[int] = []
    images: list[torch.Tensor] = []
    skipped: list[tuple[int, str]] = []
    for batch in batches:
        skipped += batch.skipped
        if batch.images is not None:
            indices += batch.indices
            images += list(batch.images.unbind(0))
        while len(images) >= batch_size:
            yield Batch(indices[:batch_size], torch.stack(images[:batch_size]), skipped)
            indices, images, skipped = indices[batch_size:], images[batch_size:], []
    if images or skipped:
        yield Batch(indices, torch.stack(images) if images else None, skipped)


def to_device(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device``, asynchronously when it is pinned."""
    return images.to(device, non_blocking=images.is_pinned())


def command_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[bool]]:
    """Files named on a command line (files or folders, expanded) and whether each was named explicitly."""
    from vtok.data import list_images

    files, strict = [], []
    for entry in inputs:
        explicit = Path(entry).is_file()
        found = list_images(entry)
        files += found
        strict += [explicit] * len(found)
    return files, strict


def warn_skipped(skipped: Sequence[tuple[int, str]], log: Callable[[str], None]) -> None:
    """Name the unreadable images, the first three in full."""
    if skipped:
        log(f"skipped {len(skipped)} unreadable images: {'; '.join(err for _, err in skipped[:3])}")


def image_batches(
    files: Sequence[Path],
    strict: Sequence[bool],
    size: int | None,
    batch_size: int,
    workers: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    desc: str = "images",
) -> Iterator[Batch]:
    """Command-line images in batches of exactly ``batch_size`` readable ones (the last may be short).

    The batches are those of loading every image first and splitting the stack (what
    the commands did before they streamed), so the outputs are unchanged. Unreadable
    files inside folders are logged and skipped; without ``size`` images above
    :data:`~vtok.data.MAX_INPUT_PIXELS` are refused from their header.
    """
    import logging

    from tqdm.auto import tqdm

    from vtok.data import MAX_INPUT_PIXELS

    log = logging.getLogger("vtok.data")
    dataset = ImageFiles(files, size, max_pixels=None if size is not None else MAX_INPUT_PIXELS, strict=strict)
    pin = torch.device(device).type == "cuda"
    loaded = stream_images(dataset, file_batches(len(files), batch_size), workers, pin_memory=pin)
    count = 0
    total = -(-len(files) // batch_size)
    for batch in tqdm(rebatch(loaded, batch_size), total=total, desc=desc, disable=not progress, leave=False):
        for _, err in batch.skipped:
            log.warning("skipping %s", err)
        if batch.images is not None:
            count += len(batch.indices)
            yield batch
    if count == 0:
        raise VtokError("no readable images among the inputs")
