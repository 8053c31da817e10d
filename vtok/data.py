"""Image data for training and the CLI: folders, file lists, WebDataset shards, the built-in set.

Training batches are a pure function of (seed, step): each epoch's order is a
seeded permutation and each sample's augmentation draws from a generator seeded
by (seed, epoch, index), so a resumed run sees exactly the data it would have
seen, on any number of ranks and workers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vtok.builtin import WINDOWS_PER_PHOTO, builtin_crops, photo, photo_names
from vtok.config import NON_NEGATIVE, SHARE, Range, ranged
from vtok.errors import VtokError
from vtok.images import IMAGE_EXTENSIONS, center_crop_arr, load_image, pil_to_tensor

log = logging.getLogger("vtok.data")

IMAGE_SIZE = Range(8)  # any image side vtok resizes to: training crops, --size, --resolution
# Without --size an input is encoded at its own size; past this many pixels the activations of a tokenizer
# outgrow a workstation's memory (a 10000 x 10000 photograph needs tens of GB), so vtok asks for --size.
MAX_INPUT_PIXELS = 4096 * 4096


@dataclass
class DataConfig:
    """Where training images come from and how they are cut.

    ``source``: ``builtin`` (the packaged photographs' train crops), a folder
    (searched recursively), a ``.txt`` file of image paths, or WebDataset tar shards
    (``shards/{000..099}.tar``). ``random_crop`` resizes the short side to a random
    size in [1, 1.25] x ``image_size`` and cuts a random square; otherwise ADM's
    center crop. Images smaller than ``image_size`` are upscaled to cover it.

    ``crop_scale: [lo, hi]`` cuts instead a random square whose side is a uniform
    fraction in [lo, hi] of the short side, anywhere in the image, resized to
    ``image_size`` (RandomResizedCrop without the aspect change). On the built-in
    set these are cut from the whole photographs, as many per epoch as it has fixed
    crops, so no two epochs repeat a crop: a model cannot memorise a few hundred
    crops. Held-out images are never augmented.

    ``color_jitter: [brightness, contrast, saturation, hue]`` (torchvision's
    ColorJitter ranges: factors drawn from [1 - x, 1 + x], the hue shift from
    [-hue, hue] with hue <= 0.5) recolours each training sample. On a few
    photographs it keeps a global (1D) tokenizer from tying its first tokens to
    which photograph it sees rather than to the colours in front of it.
    """

    source: str = "builtin"
    image_size: int = ranged(256, IMAGE_SIZE)
    random_crop: bool = False
    # Mirror training images left-right with probability 1/2 (AR runs: use a sample's flipped tokens, as the shards hold
    # them unless encoded with --no-flip).
    random_flip: bool = True
    # DataLoader processes that read and crop images (0: in the training process).
    num_workers: int = ranged(0, NON_NEGATIVE)
    # Images of the sample grids, read like source and never augmented (builtin: the held-out crops).
    held_out: str = "builtin"
    crop_scale: list[float] | None = ranged(None, SHARE)
    color_jitter: list[float] | None = ranged(None, NON_NEGATIVE)

    def __post_init__(self) -> None:
        if self.color_jitter is not None and (
            len(self.color_jitter) != 4
            or min(self.color_jitter) < 0
            or max(self.color_jitter[:3]) >= 1
            or self.color_jitter[3] > 0.5
        ):
            raise VtokError(
                "data.color_jitter must be [brightness, contrast, saturation, hue] with the first three in [0, 1) "
                f"and hue in [0, 0.5], got {self.color_jitter}"
            )
        if self.crop_scale is None:
            return
        if len(self.crop_scale) != 2 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise VtokError(f"data.crop_scale must be [lo, hi] with 0 < lo <= hi <= 1, got {self.crop_scale}")
        if self.random_crop:
            raise VtokError("data.random_crop and data.crop_scale exclude each other: pick one way to crop")


def list_images(source: str | Path) -> list[Path]:
    """Image paths of a folder (recursive, sorted) or of a text file listing one per line."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    elif path.is_file() and path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text().splitlines()]
        files = [(path.parent / line) if not Path(line).is_absolute() else Path(line) for line in lines if line]
    elif path.is_file():
        files = [path]
    elif path.exists():
        raise VtokError(f"{path} is not a regular file or folder (a device, FIFO or socket?)")
    else:
        raise VtokError(f"no such file or folder: {path}")
    if not files:
        raise VtokError(f"no images found in {path}")
    return files


def augment(image: Image.Image, rng: np.random.Generator, cfg: DataConfig) -> torch.Tensor:
    """Crop (as ``cfg`` says: random window, random jitter or ADM center) and maybe flip -> (3, S, S) in [-1, 1]."""
    size = cfg.image_size
    if cfg.crop_scale is not None:
        w, h = image.size
        side = max(1, round(min(w, h) * rng.uniform(*cfg.crop_scale)))
        left, top = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        image = center_crop_arr(image.crop((left, top, left + side, top + side)), size)
    elif cfg.random_crop:
        short = round(size * rng.uniform(1.0, 1.25))
        image = center_crop_arr(image, short) if min(image.size) != short else image
        top, left = (int(rng.integers(0, short - size + 1)) for _ in range(2))
        image = image.crop((left, top, left + size, top + size))
    else:
        image = center_crop_arr(image, size)
    if cfg.color_jitter is not None:
        image = _color_jitter(image, rng, cfg.color_jitter)
    tensor = pil_to_tensor(image)
    if cfg.random_flip and rng.random() < 0.5:
        tensor = tensor.flip(-1)
    return tensor


def _color_jitter(image: Image.Image, rng: np.random.Generator, ranges: list[float]) -> Image.Image:
    """torchvision's colour adjustments in a fixed order, with factors from ``rng`` (not the
    global RNG that ColorJitter draws from, which would break exact resume)."""
    import torchvision.transforms.functional as TF

    brightness, contrast, saturation, hue = ranges
    image = TF.adjust_brightness(image, rng.uniform(1 - brightness, 1 + brightness))
    image = TF.adjust_contrast(image, rng.uniform(1 - contrast, 1 + contrast))
    image = TF.adjust_saturation(image, rng.uniform(1 - saturation, 1 + saturation))
    return TF.adjust_hue(image, rng.uniform(-hue, hue)) if hue > 0 else image


class ImageDataset(torch.utils.data.Dataset):
    """Map-style dataset indexed by ``(epoch, index)`` so augmentation is reproducible.

    An unreadable file is logged with its name, counted in ``skipped`` and replaced
    by the next readable one, so one bad file never stops a run.
    """

    def __init__(self, items: Sequence[Path | Image.Image], cfg: DataConfig, seed: int, names: list[str] | None = None):
        self.items = list(items)
        self.cfg = cfg
        self.seed = seed
        self.names = names or [str(i) for i in self.items]
        self.skipped: set[str] = set()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: tuple[int, int]) -> torch.Tensor:
        epoch, index = key
        for attempt in range(len(self.items)):
            i = (index + attempt) % len(self.items)
            item = self.items[i]
            try:
                image = item if isinstance(item, Image.Image) else load_image(item)
            except VtokError as err:
                if self.names[i] not in self.skipped:
                    self.skipped.add(self.names[i])
                    log.warning("skipping %s (%d skipped so far)", err, len(self.skipped))
                continue
            rng = np.random.default_rng([self.seed, epoch, i])
            return augment(image, rng, self.cfg)
        raise VtokError("no readable image in the dataset")


def make_dataset(cfg: DataConfig, seed: int, split: str = "train") -> ImageDataset:
    """The map-style dataset of ``cfg.source`` (``split`` picks the built-in set's half)."""
    source = cfg.source if split == "train" else cfg.held_out
    if split != "train":
        cfg = dataclasses.replace(cfg, random_crop=False, random_flip=False, crop_scale=None, color_jitter=None)
    if source == "builtin" and cfg.crop_scale is not None:
        photos = [(name, photo(name)) for name in photo_names("train") for _ in range(WINDOWS_PER_PHOTO)]
        return ImageDataset([im for _, im in photos], cfg, seed, [n for n, _ in photos])
    if source == "builtin":
        crops = builtin_crops("train" if split == "train" else "heldout", cfg.image_size)
        return ImageDataset([im for _, im in crops], cfg, seed, [n for n, _ in crops])
    if ".tar" in source:
        raise VtokError("WebDataset shards are streamed: use iterate_batches, not make_dataset")
    return ImageDataset(list_images(source), cfg, seed)


def iterate_batches(
    cfg: DataConfig, batch_size: int, seed: int, start_step: int = 0, rank: int = 0, world_size: int = 1
) -> Iterator[torch.Tensor]:
    """Endless (batch_size, 3, S, S) batches of this rank, starting at global step ``start_step``."""
    if ".tar" in cfg.source:
        yield from _iterate_shards(cfg, batch_size, seed, start_step, rank, world_size)
        return
    dataset = make_dataset(cfg, seed)
    n = len(dataset)
    global_batch = batch_size * world_size
    steps_per_epoch = max(1, n // global_batch)
    step = start_step
    while True:
        epoch, offset = divmod(step, steps_per_epoch)
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(-(-global_batch // n))])
        batches = [
            [(epoch, int(i)) for i in order[b * global_batch + rank * batch_size :][:batch_size]]
            for b in range(offset, steps_per_epoch)
        ]
        # Its own generator: a DataLoader otherwise draws a seed from the global RNG, which
        # would shift every later random draw of a resumed run against an uninterrupted one.
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
        )
        for batch in loader:
            yield batch
            step += 1


def _iterate_shards(
    cfg: DataConfig, batch_size: int, seed: int, start_step: int, rank: int, world_size: int
) -> Iterator[torch.Tensor]:
    """WebDataset shards: each epoch shuffles the shard list with the seed and gives rank r
    every world_size-th shard; a resumed run skips the samples already seen."""
    import webdataset as wds

    urls = list(wds.shardlists.expand_urls(cfg.source))
    if len(urls) < world_size:
        raise VtokError(f"{len(urls)} shards cannot feed {world_size} ranks; write at least one shard per rank")
    skip = start_step * batch_size
    epoch = 0
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(len(urls))
        mine = [urls[i] for i in order[rank::world_size]]
        stream = wds.WebDataset(
            mine, shardshuffle=False, nodesplitter=None, empty_check=False, handler=wds.warn_and_continue
        )
        batch: list[torch.Tensor] = []
        for index, sample in enumerate(stream.decode("pil", handler=wds.warn_and_continue)):
            if skip > 0:
                skip -= 1
                continue
            image = next((v for k, v in sample.items() if k.split(".")[-1] in {"jpg", "jpeg", "png", "webp"}), None)
            if not isinstance(image, Image.Image):
                log.warning("skipping sample %s without a decodable image", sample.get("__key__"))
                continue
            rng = np.random.default_rng([seed, epoch, rank, index])
            from vtok.images import to_rgb

            batch.append(augment(to_rgb(image), rng, cfg))
            if len(batch) == batch_size:
                yield torch.stack(batch)
                batch = []
        epoch += 1


def load_inputs(inputs: Sequence[str], size: int | None) -> tuple[list[str], torch.Tensor]:
    """Images named on a command line (files or folders) -> names and a (B, 3, S, S) batch.

    Explicit files that cannot be read fail with one line; unreadable files inside
    folders are skipped and reported. Without ``size`` all images must share one size.
    """
    names, tensors = [], []
    for entry in inputs:
        path = Path(entry)
        explicit = path.is_file()
        for file in list_images(path):
            try:
                image = load_image(file, max_pixels=None if size is not None else MAX_INPUT_PIXELS)
            except VtokError as err:
                if explicit:
                    raise
                log.warning("skipping %s", err)
                continue
            if size is not None:
                image = center_crop_arr(image, size)
            names.append(str(file))
            tensors.append(pil_to_tensor(image))
    if not tensors:
        raise VtokError("no readable images among the inputs")
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) > 1:
        raise VtokError(f"inputs have different sizes {sorted(shapes)[:3]}; pass --size to resize and crop them")
    return names, torch.stack(tensors)
