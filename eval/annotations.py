"""TokBench's annotation layout, read and written by one code path for its data and vtok's built-in set.

A TokBench folder holds::

    annotations/text_<dataset>.json   [{file_name, height, width,
                                        annotations: [{bbox: [x1, y1, x2, y2], rec, ratio}]}]
    annotations/face_meta.json        [{image_name, img_height, img_width,
                                        faces: [{kps: [[x, y] x 5], box: [x1, y1, x2, y2], ratio, gt}]}]
    images/text_data/<dataset>/<file_name>
    images/face_data/<face_dataset>/<image_name>

``ratio`` is the instance's relative size, the quantity TokBench bins. Boxes are
absolute pixels of the original image; polygons ([[x, y], ...]) are read as their
bounding box.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vtok.errors import VtokError
from vtok.io import atomic_path


@dataclass
class Word:
    bbox: tuple[float, float, float, float]
    rec: str
    ratio: float


@dataclass
class TextImage:
    file_name: str
    height: int
    width: int
    annotations: list[Word] = field(default_factory=list)


@dataclass
class Face:
    kps: list[tuple[float, float]]
    box: tuple[float, float, float, float]
    ratio: float
    gt: str = ""


@dataclass
class FaceImage:
    image_name: str
    img_height: int
    img_width: int
    faces: list[Face] = field(default_factory=list)


def _box(raw) -> tuple[float, float, float, float]:
    if len(raw) == 4 and all(isinstance(v, (int, float)) for v in raw):
        return tuple(float(v) for v in raw)
    xs, ys = [float(p[0]) for p in raw], [float(p[1]) for p in raw]
    return (min(xs), min(ys), max(xs), max(ys))


def _load_json(path: Path) -> list:
    if not path.is_file():
        raise VtokError(f"annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text(errors="replace"))
    except json.JSONDecodeError as e:
        raise VtokError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from e
    if not isinstance(data, list):
        raise VtokError(f"{path} must hold a list of images")
    return data


def read_text_annotations(path: str | Path) -> list[TextImage]:
    path = Path(path)
    try:
        return [
            TextImage(
                str(item["file_name"]),
                int(item["height"]),
                int(item["width"]),
                [Word(_box(w["bbox"]), str(w["rec"]), float(w["ratio"])) for w in item["annotations"]],
            )
            for item in _load_json(path)
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise VtokError(f"{path} is not in TokBench's text layout (missing or bad field {e})") from e


def read_face_annotations(path: str | Path) -> list[FaceImage]:
    path = Path(path)
    try:
        return [
            FaceImage(
                str(item["image_name"]),
                int(item["img_height"]),
                int(item["img_width"]),
                [
                    Face(
                        [(float(x), float(y)) for x, y in f["kps"]],
                        _box(f["box"]),
                        float(f["ratio"]),
                        str(f.get("gt", "")),
                    )
                    for f in item["faces"]
                ],
            )
            for item in _load_json(path)
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise VtokError(f"{path} is not in TokBench's face layout (missing or bad field {e})") from e


def write_annotations(items: list[TextImage] | list[FaceImage], path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps([asdict(i) for i in items], indent=1) + "\n")
