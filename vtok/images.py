"""Images at the edges: reading any file to RGB, ADM's resize-and-crop, tensors <-> PIL, grids."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from PIL import Image, ImageOps, UnidentifiedImageError

from vtok.errors import VtokError
from vtok.io import atomic_path, check_regular_file
from vtok.memory import check_memory, image_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Grayscale, palette and CMYK convert directly; alpha is composited on white
    (what a viewer shows); 16-bit and float images are rescaled by their range
    instead of being clipped to 255.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = Image.fromarray(arr, mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB")


def load_image(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Open an image file as 8-bit RGB; a :class:`VtokError` for missing, unreadable or too large files.

    ``max_pixels`` is checked from the header, before any pixel is decoded. PIL's
    decompression-bomb guard (over twice its ``MAX_IMAGE_PIXELS``) reads as an
    unreadable file, like any other.
    """
    path = Path(path)
    check_regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            # Between PIL's limit and twice it PIL only warns; the budget below is the check that matters here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            check_memory(w * h * 4 * 3, f"decoding {path} ({w}x{h})")  # RGBA decode, RGB copy, array: from the header
            if max_pixels is not None and w * h > max_pixels:
                raise VtokError(
                    f"{path} is {w}x{h} ({w * h / 1e6:.0f} MP), more than {max_pixels / 1e6:.0f} MP to encode at its "
                    "own size; pass --size (e.g. --size 256) to resize it"
                )
            im.load()
            return to_rgb(im)
    except Image.DecompressionBombError:
        raise VtokError(f"cannot read image {path}: over PIL's decompression-bomb pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as err:
        raise VtokError(f"cannot read image {path}: {err.__class__.__name__}") from None


def center_crop_arr(image: Image.Image, size: int) -> Image.Image:
    """ADM's resize and center crop: halve with BOX while the short side is >= 2 * size,
    resize bicubic so the short side is ``size``, then cut the central ``size`` square.

    Images smaller than ``size`` are therefore upscaled (bicubic) to cover the crop. A strip (one side
    over 8 times the other, e.g. 1 x 1,000,000) is first cut to its central part 4 times as long as wide
    plus a margin for the resampling kernel: the crop keeps nothing else, and resizing all of it to cover
    ``size`` would take gigabytes. Images up to 8:1 are resized whole, as ADM does.
    """
    image = _cut_strip(image)
    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    check_memory(
        image_bytes(1, *(round(x * scale) for x in image.size)), f"resizing a {image.size[0]}x{image.size[1]} image"
    )
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top = (arr.shape[0] - size) // 2
    left = (arr.shape[1] - size) // 2
    return Image.fromarray(arr[top : top + size, left : left + size])


def _cut_strip(image: Image.Image, ratio: int = 8) -> Image.Image:
    """The central part of a strip (long side over ``ratio`` times the short one), 4x as long as wide + 16 px."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    if long <= ratio * short:
        return image
    keep = min(long, 4 * short + 16)
    start = (long - keep) // 2
    box = (start, 0, start + keep, h) if w > h else (0, start, w, start + keep)
    return image.crop(box)


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> (3, H, W) float32 in [-1, 1]."""
    arr = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())
    return rearrange(arr, "h w c -> c h w").float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) in [-1, 1] -> uint8 in [0, 255], rounded as a PNG writer would."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> RGB PIL image."""
    return Image.fromarray(rearrange(to_uint8(image).cpu(), "c h w -> h w c").numpy())


def make_grid(images: torch.Tensor, ncol: int, pad: int = 2) -> torch.Tensor:
    """(N, 3, H, W) -> (3, rows*(H+pad)+pad, ncol*(W+pad)+pad) with white padding."""
    n, c, h, w = images.shape
    rows = -(-n // ncol)
    fill = torch.ones(rows * ncol - n, c, h, w, dtype=images.dtype, device=images.device)
    tiles = torch.cat([images, fill])
    tiles = torch.nn.functional.pad(tiles, (pad, 0, pad, 0), value=1.0)
    grid = rearrange(tiles, "(r k) c h w -> c (r h) (k w)", k=ncol)
    return torch.nn.functional.pad(grid, (0, pad, 0, pad), value=1.0)


def save_image(image: torch.Tensor, path: str | Path, what: str = "image") -> None:
    """Write (3, H, W) in [-1, 1] as a PNG, atomically, with a text chunk saying vtok wrote it (``what``).

    The chunk is how a later command knows it may replace the file (:func:`vtok.outputs.is_vtok_image`).
    """
    from PIL.PngImagePlugin import PngInfo

    from vtok.outputs import PNG_KEY

    info = PngInfo()
    info.add_text(PNG_KEY, what)
    path = Path(path)
    with atomic_path(path) as tmp:
        tensor_to_pil(image).save(tmp, format="PNG", pnginfo=info)
