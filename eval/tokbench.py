"""TokBench's protocol: letterbox to R x R, reconstruct, restore to the original size, score in original coordinates.

As TokBench's reconstruction scripts do: the image is resized (LANCZOS, aspect kept,
sides rounded up) into an R x R black canvas, reconstructed there, and the
reconstruction's image region is cropped and resized back (LANCZOS) to the
original size, where the annotation's boxes and landmarks apply unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from vtok.errors import VtokError
from vtok.eval.annotations import read_face_annotations, read_text_annotations
from vtok.eval.face import FaceEmbedder, FaceFidelity
from vtok.eval.text import Recognizer, TextFidelity
from vtok.images import load_image, pil_to_tensor, tensor_to_pil

# (B, 3, R, R) in [-1, 1] -> (B, 3, R, R) in [-1, 1]
Reconstruct = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Letterbox:
    original: tuple[int, int]
    scaled: tuple[int, int]
    offset: tuple[int, int]
    size: int


def letterbox(image: Image.Image, size: int) -> tuple[Image.Image, Letterbox]:
    """``image`` resized into a ``size`` x ``size`` black canvas, centred, aspect ratio kept."""
    w, h = image.size
    scale = min(size / w, size / h)
    scaled = (min(size, math.ceil(w * scale)), min(size, math.ceil(h * scale)))
    canvas = Image.new("RGB", (size, size))
    offset = ((size - scaled[0]) // 2, (size - scaled[1]) // 2)
    canvas.paste(image.resize(scaled, Image.LANCZOS), offset)
    return canvas, Letterbox((w, h), scaled, offset, size)


def restore(canvas: Image.Image, meta: Letterbox) -> Image.Image:
    """The inverse of :func:`letterbox` on a reconstruction: crop the image region, resize to the original size."""
    x, y = meta.offset
    region = canvas.crop((x, y, x + meta.scaled[0], y + meta.scaled[1]))
    return region.resize(meta.original, Image.LANCZOS)


def reconstruct_at(image: Image.Image, reconstruct: Reconstruct, resolution: int) -> Image.Image:
    """One image through the protocol: letterbox, ``reconstruct``, restore to the original size."""
    canvas, meta = letterbox(image, resolution)
    with torch.inference_mode():
        out = reconstruct(pil_to_tensor(canvas)[None])  # (1, 3, R, R)
    if out.shape[-2:] != (resolution, resolution):
        raise VtokError(f"the reconstruction is {tuple(out.shape[-2:])}, expected {(resolution, resolution)}")
    return restore(tensor_to_pil(out[0]), meta)


def text_datasets(root: Path) -> list[str]:
    """Names of the text datasets in a TokBench folder (``annotations/text_<name>.json``)."""
    return sorted(p.stem[len("text_") :] for p in (root / "annotations").glob("text_*.json"))


def check_layout(root: str | Path) -> Path:
    root = Path(root)
    if not (root / "annotations").is_dir():
        raise VtokError(f"{root} is not in TokBench's layout: it has no annotations/ folder")
    return root


def _open_pair(original_path: Path, recon_dir: Path | None, rel: str, reconstruct: Reconstruct | None, resolution: int):
    original = load_image(original_path)
    if recon_dir is not None:
        recon_path = recon_dir / rel
        if not recon_path.is_file():
            raise VtokError(f"reconstruction {recon_path} is missing")
        recon = load_image(recon_path)
        if recon.size != original.size:
            raise VtokError(
                f"{recon_path} is {recon.size[0]}x{recon.size[1]}, its original {original.size[0]}x{original.size[1]}"
            )
        return original, recon
    return original, reconstruct_at(original, reconstruct, resolution)


def score_text(
    root: Path,
    text: TextFidelity,
    reconstruct: Reconstruct | None,
    recon_dir: Path | None = None,
    progress: bool = True,
) -> int:
    """Feed every annotated text image of ``root`` to ``text``; returns the number of images."""
    n = 0
    for dataset in text_datasets(root):
        items = read_text_annotations(root / "annotations" / f"text_{dataset}.json")
        for item in tqdm(items, desc=f"text {dataset}", disable=not progress):
            rel = f"text_data/{dataset}/{item.file_name}"
            original, recon = _open_pair(root / "images" / rel, recon_dir, rel, reconstruct, text.resolution)
            text.update(original, recon, item.annotations, item.file_name)
            n += 1
    return n


def face_dataset(root: Path) -> Path | None:
    folders = sorted(p for p in (root / "images" / "face_data").glob("*") if p.is_dir())
    return folders[0] if folders else None


def score_faces(
    root: Path,
    faces: FaceFidelity,
    reconstruct: Reconstruct | None,
    recon_dir: Path | None = None,
    progress: bool = True,
) -> int:
    """Feed every annotated face image of ``root`` to ``faces``; returns the number of images."""
    meta = root / "annotations" / "face_meta.json"
    folder = face_dataset(root)
    if not meta.is_file() or folder is None:
        raise VtokError(f"{root} has no face annotations (annotations/face_meta.json and images/face_data/<name>/)")
    items = read_face_annotations(meta)
    for item in tqdm(items, desc="faces", disable=not progress):
        rel = f"face_data/{folder.name}/{item.image_name}"
        original, recon = _open_pair(root / "images" / rel, recon_dir, rel, reconstruct, faces.resolution)
        faces.update(original, recon, item.faces, item.image_name)
    return len(items)


def run_tokbench(
    root: str | Path,
    resolution: int,
    reconstruct: Reconstruct | None,
    recognizer: Recognizer | None,
    embedder: FaceEmbedder | None,
    recon_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[TextFidelity | None, FaceFidelity | None]:
    """Text and/or face fidelity of ``reconstruct`` (or of ready reconstructions in ``recon_dir``) on a TokBench folder."""
    root = check_layout(root)
    recon_dir = Path(recon_dir) if recon_dir is not None else None
    text = faces = None
    if recognizer is not None:
        text = TextFidelity(recognizer, resolution)
        score_text(root, text, reconstruct, recon_dir, progress)
    if embedder is not None:
        faces = FaceFidelity(embedder, resolution)
        score_faces(root, faces, reconstruct, recon_dir, progress)
    return text, faces
