"""VTBench's tasks in ``vtok eval``: images of any size and aspect, fed as VTBench feeds them, scored per image.

How an image reaches the tokenizer (``fit``):

- ``crop``: scale to cover R x R (aspect kept, LANCZOS) and crop the centre:
  VTBench's default preprocessing (``lock_ratio`` + ``center_crop`` at the model's size).
- ``native``: the image as it is, any size and aspect: VTBench's varying-resolution
  feed (its DIV2K setting: no resize, no crop) and its high-resolution one.
- ``grid``: as ``native``, centre-cropped to the nearest multiples of the
  tokenizer's downsampling factor (its native grid), at most factor - 1 pixels
  per side, so a tokenizer that takes other sizes gets one it can take.
- ``tiles``: the image cut into R x R tiles, each reconstructed, stitched back:
  how a tokenizer trained at R (64 px demos) faces a page of legible text.

Every image is reconstructed at its own size, then scored at that size by the
image metrics (PSNR, SSIM, LPIPS, rFID) and by the whole-image OCR metrics (cer,
wer). VTBench resizes both images to 256 x 256 before scoring; vtok keeps the
pixels the tokenizer produced. A tokenizer that cannot take an image's size or
aspect is not a crash: that image is refused with its one-line reason, written
per size (height x width) in ``info["refused"]`` and per image in ``info["per_image"]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from einops import rearrange
from PIL import Image
from tqdm.auto import tqdm

from vtok.data import list_images
from vtok.errors import VtokError
from vtok.eval.metric import MetricUnavailable
from vtok.eval.psnr import psnr_per_image
from vtok.eval.vtbench_sets import DEFAULT_FIT, SET_NAMES, SetItem, builtin_set, cover_crop, set_key
from vtok.images import load_image, pil_to_tensor

FITS = ("crop", "native", "grid", "tiles")
PAGE_METRICS = ("cer", "wer")
# VTBench's data sets (Hugging Face configurations) and how VTBench means each to be fed.
VTBENCH_TASKS = {
    "task1-imagenet": "crop",
    "task1-high-resolution": "highres",
    "task1-varying-resolution": "native",
    "task2-detail-preservation": "crop",
    "task3-movie-posters": "crop",
    "task3-arxiv-abstracts": "crop",
    "task3-multilingual": "crop",
}


@dataclass
class Source:
    """The images to score, how to feed them by default, and what they are."""

    items: list[SetItem]
    fit: str
    side: int | None  # the square side ``crop`` feeds at (None: the evaluation resolution)
    description: str


def is_vtbench_data(data: str) -> bool:
    """A built-in VTBench set name, or a folder in one of VTBench's layouts."""
    if set_key(data) is not None:
        return True
    root = Path(data)
    return root.is_dir() and ((root / "original_images").is_dir() or _task_of(root) is not None)


def _task_of(root: Path) -> str | None:
    """The VTBench task a folder holds, by its own name or its parent's (``task3-multilingual/Hindi``)."""
    for name in (root.name, root.parent.name):
        for task in VTBENCH_TASKS:
            if name == task or name.startswith(task + "_"):
                return task
    return None


def _folder_items(base: Path) -> list[SetItem]:
    parquet = sorted(base.rglob("*.parquet"))
    if parquet:
        return _parquet_items(parquet)
    files = list_images(base)
    if not files:
        raise VtokError(f"no images in {base}")
    return [SetItem(str(f.relative_to(base)), load_image(f)) for f in files]


def _parquet_items(files: list[Path]) -> list[SetItem]:
    """VTBench's Hugging Face files as downloaded: parquet tables with an ``image`` column of PNG bytes."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise VtokError("reading VTBench's parquet files needs pyarrow (pip install pyarrow)") from None
    import io

    items = []
    for path in files:
        table = pq.read_table(path, columns=["image"]).to_pylist()
        for i, row in enumerate(table):
            with Image.open(io.BytesIO(row["image"]["bytes"])) as im:
                items.append(SetItem(f"{path.stem}_{i:08d}.png", im.convert("RGB")))
    return items


def load_source(data: str, resolution: int) -> Source:
    """The items of ``data``: a built-in VTBench set, a VTBench folder, ``builtin`` or an image folder."""
    key = set_key(data)
    if key is not None:
        return Source(list(builtin_set(key, resolution)), DEFAULT_FIT[key], None, f"vtok built-in {data} (seed 0)")
    if data == "builtin":
        from vtok.builtin import builtin_crops

        return Source([SetItem(n, im) for n, im in builtin_crops("heldout", resolution)], "crop", None, "builtin")
    root = Path(data)
    if not root.exists():
        raise VtokError(f"data {root} does not exist")
    if (root / "original_images").is_dir():
        # VTBench's output layout: original_images/ (already preprocessed) beside reconstructed_images/.
        return Source(_folder_items(root / "original_images"), "native", None, f"VTBench results folder {root}")
    task = _task_of(root)
    if task is not None:
        fit = VTBENCH_TASKS[task]
        side = 4 * resolution if fit == "highres" else None
        items = _folder_items(root)
        return Source(items, "crop" if fit == "highres" else fit, side, f"VTBench {task} from {root}")
    base = root / "images" if (root / "annotations").is_dir() else root
    return Source(_folder_items(base), "crop", None, str(base))


def prepare(image: Image.Image, fit: str, side: int, factor: int) -> Image.Image:
    """The image as ``fit`` feeds it (see the module docstring); ``side``: the crop/tile size."""
    if fit == "crop":
        return cover_crop(image, side, side)
    if fit == "grid" and factor > 1:
        w, h = image.width // factor * factor, image.height // factor * factor
        if w == 0 or h == 0:
            raise VtokError(f"{image.width}x{image.height} is smaller than one cell of the grid ({factor} px)")
        left, top = (image.width - w) // 2, (image.height - h) // 2
        return image.crop((left, top, left + w, top + h))
    if fit == "tiles" and (image.width % side or image.height % side):
        # Round up to whole tiles: the page is padded by cover-cropping to the next multiple.
        w, h = -(-image.width // side) * side, -(-image.height // side) * side
        return cover_crop(image, w, h)
    return image


def _reconstruct_tiles(x: torch.Tensor, side: int, reconstruct: Callable) -> torch.Tensor:
    """x: (1, 3, H, W), H and W multiples of ``side`` -> the stitched reconstruction of its tiles."""
    rows, cols = x.shape[-2] // side, x.shape[-1] // side
    tiles = rearrange(x, "b c (r h) (k w) -> (b r k) c h w", h=side, w=side)  # (rows*cols, 3, side, side)
    out = reconstruct(tiles)
    if out.shape != tiles.shape:
        raise VtokError(f"the reconstruction of a {side}x{side} tile is {tuple(out.shape[-2:])}")
    return rearrange(out, "(b r k) c h w -> b c (r h) (k w)", r=rows, k=cols)  # (1, 3, H, W)


def reason_line(err: BaseException) -> str:
    """The first line of an error, for a table cell."""
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:200]


def _recon_file(recon_dir: Path, name: str, size: tuple[int, int]) -> torch.Tensor:
    path = recon_dir / name
    path = path if path.is_file() else path.with_suffix(".png")
    if not path.is_file():
        raise VtokError(f"no reconstruction for {name} in {recon_dir}")
    image = load_image(path)
    if image.size != size:
        raise VtokError(f"{path} is {image.width}x{image.height}; the fed image is {size[0]}x{size[1]}")
    return pil_to_tensor(image)[None]


def run_vtbench(result: Any, names: list[str], run: Any, fit: str | None, build_metric: Callable) -> None:
    """Score ``names`` (image metrics and cer/wer) on ``run.data``, writing into ``result`` (an EvalResult)."""
    if fit is not None and fit not in FITS:
        raise VtokError(f"unknown fit {fit!r}; choose from {', '.join(FITS)}")
    source = load_source(run.data, run.resolution)
    fit = fit or source.fit
    side = source.side or run.resolution
    factor = int(getattr(run.tokenizer, "downsample_factor", 1) or 1) if run.tokenizer is not None else 1
    metrics = {}
    for name in names:
        try:
            metrics[name] = build_metric(name, run.device)
        except MetricUnavailable as err:
            result.skipped[name] = str(err)
    if run.tokenizer is not None:
        from vtok.pipeline import reconstruct_with

        reconstruct = reconstruct_with(run.tokenizer)
    else:
        reconstruct = run.reconstruct
    refused: dict[str, str] = {}
    per_image: list[dict[str, Any]] = []
    scored = 0
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    for item in tqdm(source.items, desc=run.data if len(run.data) < 30 else "images", disable=not run.progress):
        fed = prepare(item.image, fit, side, factor)
        size = f"{fed.height}x{fed.width}"  # height x width, as the tokenizers' own messages say
        x = pil_to_tensor(fed)[None]  # (1, 3, H, W) in [-1, 1]
        try:
            with torch.inference_mode():
                if run.recon_dir is not None:
                    y = _recon_file(run.recon_dir, item.name, fed.size)
                elif fit == "tiles":
                    y = _reconstruct_tiles(x, side, reconstruct)
                else:
                    y = reconstruct(x)
            if y.shape != x.shape:
                raise VtokError(f"reconstructs {size} as {y.shape[-2]}x{y.shape[-1]}")
        except (VtokError, RuntimeError, ValueError) as err:
            if run.recon_dir is not None and "no reconstruction" in str(err):
                raise
            refused.setdefault(size, reason_line(err))
            per_image.append({"image": item.name, "size": size, "refused": reason_line(err)})
            continue
        y = y.float().clamp(-1, 1).cpu()
        for metric in metrics.values():
            if getattr(metric, "takes_texts", False):
                metric.update(x, y, texts=[item.text], scripts=[item.script], groups=[item.group])
            else:
                metric.update(x, y)
        per_image.append({"image": item.name, "size": size, "PSNR": round(float(psnr_per_image(x, y)[0]), 3)})
        if len(shown) < 8 and (not shown or shown[0][0].shape == x.shape):
            shown.append((x, y))  # the report's grid: the first images of the first image's size
        scored += 1
    if shown:
        result.grid = (torch.cat([a for a, _ in shown]), torch.cat([b for _, b in shown]))
    result.info.update(
        data=run.data, set=source.description, fit=fit, images=scored, refused=refused, per_image=per_image,
        feed={"crop": f"cover {side}x{side}, centre crop", "native": "as is", "grid": f"centre-cropped to multiples of {factor}",
              "tiles": f"{side}x{side} tiles of the image"}[fit],
    )  # fmt: skip
    if scored == 0:
        (first, reason), others = next(iter(refused.items())), len(refused) - 1
        more = f" (and {others} other size{'s' * (others > 1)})" if others else ""
        for name in metrics:
            result.skipped[name] = f"no image could be reconstructed: {first}: {reason}{more}"
        return
    for name, metric in metrics.items():
        result.scores[name] = metric.compute()
        result.protocols[name] = {
            **metric.protocol(),
            "fit": fit,
            "feed": result.info["feed"],
            "scored_at": "the fed size",
        }
        if refused:
            result.protocols[name]["refused"] = refused


SET_HELP = ", ".join(SET_NAMES)
