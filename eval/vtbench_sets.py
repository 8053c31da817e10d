"""VTBench's task sets, built in: rendered text pages, detail patterns, high-resolution and non-square crops.

VTBench (Lin et al., 2025, huawei-lin/VTBench) scores tokenizers on three task
families: reconstruction (ImageNet, high resolution, varying resolution and aspect
ratio), detail preservation (patterns and fine textures) and text preservation
(movie posters, arXiv abstracts, multilingual text, scored by OCR CER/WER). Its
images come from a Hugging Face data set; these sets stand in for them offline,
generated from seed 0 as a pure function of the resolution:

- ``vtbench-documents``: abstract-like paragraphs in the DejaVu fonts matplotlib
  ships, dark on clean paper, in three print bands of four pages each (see
  :data:`PRINT_BANDS`); the rendered string is the ground truth.
- ``vtbench-posters``: a large title and a subtitle on a built-in photograph.
- ``vtbench-multilingual``: Latin with diacritics, Cyrillic and Greek, one script
  per page (no packaged font covers CJK, so no CJK page).
- ``vtbench-detail``: fine gratings, zone plates, checkerboards, hairlines,
  small print and texture crops of the built-in photographs.
- ``vtbench-highres``: square crops at four times the resolution (VTBench feeds
  1024 px against its 256 px base).
- ``vtbench-varying``: non-square crops of the held-out photographs at seven
  aspect ratios, short side max(R, 48), sides multiples of 16.

Text pages are ``max(256, R)`` rounded up to a multiple of R pixels square (R =
the evaluation resolution), so a 64 px tokenizer still faces text that an OCR
model reads: it reconstructs the page as tiles of its own size.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vtok.builtin import photo, photo_names
from vtok.errors import VtokError
from vtok.images import center_crop_arr

SEED = 0
TEXT_SETS = ("documents", "posters", "multilingual")
SETS = (*TEXT_SETS, "detail", "highres", "varying")
PREFIX = "vtbench-"
SET_NAMES = tuple(PREFIX + s for s in SETS)
# How each set is fed to a tokenizer by default (see vtok.eval.vtbench.FITS).
DEFAULT_FIT = {
    "documents": "tiles",
    "posters": "tiles",
    "multilingual": "tiles",
    "detail": "crop",
    "highres": "native",
    "varying": "native",
}

_ABSTRACT_WORDS = (
    "we propose a visual tokenizer that compresses images into discrete codes for autoregressive "
    "generation our method learns a codebook with high usage and preserves text faces and fine "
    "detail experiments on standard benchmarks show lower error at fewer tokens than prior work "
    "the decoder reconstructs each patch from its code while the encoder keeps spatial structure "
    "results improve with resolution and scale across model sizes data and training steps"
).split()
_TITLES = (
    "GRAND OPENING", "NIGHT MARKET", "THE LAST TRAIN", "SUMMER SALE", "OCEAN DRIVE",
    "CITY LIGHTS", "JAZZ FESTIVAL", "MOUNTAIN RUN",
)  # fmt: skip
_SUBTITLES = (
    "Friday 8 pm at the harbour", "Tickets from 12 euros", "Now showing in cinemas", "Doors open at noon",
    "Live music all weekend", "Free entry for students", "Book online today", "Starts 5 June 2026",
)  # fmt: skip
MULTILINGUAL = {
    "latin": (
        "Große Straße und schöne Grüße", "Le café était très agréable", "Zażółć gęślą jaźń dziś",
        "El niño comió piña en León", "Ærø og Øresund på færge", "Şişli ve Çankaya yolları",
    ),
    "cyrillic": (
        "Быстрая бурая лиса прыгает", "Съешь же ещё этих булок", "Широкая электрификация",
        "Щука в реке плывёт домой", "Київ і Львів навесні", "Жёлтый дом у моря",
    ),
    "greek": (
        "Η γρήγορη καφέ αλεπού", "Ξεσκεπάζω την ψυχοφθόρα", "Καλημέρα από την Αθήνα",
        "Το μικρό σπίτι στο νησί", "Φως και θάλασσα παντού", "Ένας δρόμος προς τη Θεσσαλονίκη",
    ),
}  # fmt: skip
FONTS = ("DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf")
# The documents' print sizes in px at a 256 px page: "small" is VTBench's abstract print,
# which a 64 px tokenizer loses whole; the larger bands grade what it keeps, as TokBench
# grades text by size, so the documents order tokenizers that all lose the small print.
PRINT_BANDS = {"print_small": (9.0, 12.5), "print_medium": (14.0, 18.0), "print_large": (20.0, 28.0)}
PAGES_PER_BAND = 4
# Aspect ratios (width / height) of the varying set, as VTBench's DIV2K-style images span landscape and portrait.
ASPECTS = ((2, 1), (1, 2), (4, 3), (3, 4), (16, 9), (9, 16), (3, 1))


@dataclass(frozen=True)
class SetItem:
    """One image of a set: ``name``, the RGB image, its rendered text (None if unknown), script and group.

    ``group`` names a subset the text metrics also report on its own (a print band).
    """

    name: str
    image: Image.Image
    text: str | None = None
    script: str | None = None
    group: str | None = None


def set_key(data: str) -> str | None:
    """``"vtbench-documents"`` -> ``"documents"``; None for anything that is not a built-in VTBench set."""
    if not data.startswith(PREFIX):
        return None
    key = data[len(PREFIX) :]
    if key not in SETS:
        raise VtokError(f"unknown VTBench set {data!r}; choose from {', '.join(SET_NAMES)}")
    return key


def page_side(resolution: int) -> int:
    """Side of a text page: at least 256 px (legible to an OCR model), a whole number of R x R tiles."""
    return resolution * max(1, math.ceil(256 / resolution))


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise VtokError(f"font {name} not found in matplotlib's data folder")
    return ImageFont.truetype(str(path), max(4, size))


def _wrap(draw: ImageDraw.ImageDraw, words: list[str], font, width: int) -> list[str]:
    """Greedy word wrap of ``words`` into lines no wider than ``width`` pixels."""
    lines, line = [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return [*lines, line] if line else lines


def _paper(rng: np.random.Generator, side: int) -> Image.Image:
    tone = int(rng.integers(236, 252))
    return Image.new("RGB", (side, side), (tone, tone - int(rng.integers(0, 6)), tone - int(rng.integers(0, 12))))


def _document(rng: np.random.Generator, side: int, band: tuple[float, float]) -> tuple[Image.Image, str]:
    image = _paper(rng, side)
    draw = ImageDraw.Draw(image)
    scale = side / 256
    font = _font(str(rng.choice(FONTS[:2])), round(float(rng.uniform(*band)) * scale))
    margin, line_h = round(12 * scale), round(font.size * 1.45)
    words = [str(w) for w in rng.choice(_ABSTRACT_WORDS, size=80)]
    words[0] = words[0].capitalize()
    lines = _wrap(draw, words, font, side - 2 * margin)
    lines = lines[: (side - 2 * margin) // line_h]
    ink = tuple(int(v) for v in rng.integers(0, 50, size=3))
    for i, line in enumerate(lines):
        draw.text((margin, margin + i * line_h), line, font=font, fill=ink)
    return image, " ".join(lines)


def _poster(rng: np.random.Generator, side: int, background: Image.Image, index: int) -> tuple[Image.Image, str]:
    image = center_crop_arr(background, side)
    draw = ImageDraw.Draw(image)
    title, subtitle = _TITLES[index % len(_TITLES)], _SUBTITLES[index % len(_SUBTITLES)]
    margin = side // 16
    size = side // 7
    font = _font("DejaVuSans-Bold.ttf", size)
    while draw.textlength(title, font=font) > side - 2 * margin:
        size -= 1
        font = _font("DejaVuSans-Bold.ttf", size)
    small = _font("DejaVuSans.ttf", max(side // 18, 9))
    top = int(rng.integers(margin, side // 3))
    # A dark band behind the lettering, as posters keep their titles legible over a photograph.
    band = (0, top - margin // 2, side, top + size + small.size + 2 * margin)
    draw.rectangle(band, fill=(18, 18, 28))
    draw.text((margin, top), title, font=font, fill=(250, 246, 230))
    draw.text((margin, top + size + margin // 2), subtitle, font=small, fill=(235, 220, 120))
    return image, f"{title} {subtitle}"


def _multilingual(rng: np.random.Generator, side: int, script: str, page: int) -> tuple[Image.Image, str]:
    image = _paper(rng, side)
    draw = ImageDraw.Draw(image)
    scale = side / 256
    font = _font(FONTS[page % 2], round(15 * scale))
    lines = [MULTILINGUAL[script][(page * 3 + i) % len(MULTILINGUAL[script])] for i in range(3)]
    margin, line_h = round(14 * scale), round(font.size * 2.2)
    for i, line in enumerate(lines):
        while draw.textlength(line, font=font) > side - 2 * margin:
            line = line.rsplit(" ", 1)[0]
        lines[i] = line
        draw.text((margin, margin + i * line_h), line, font=font, fill=(15, 15, 25))
    return image, " ".join(lines)


def _detail_pattern(kind: int, side: int) -> Image.Image:
    """Synthetic patterns with energy near the Nyquist limit: what a tokenizer smooths away first."""
    y, x = np.mgrid[0:side, 0:side].astype(np.float64)
    if kind == 0:  # vertical grating, 4 px period
        v = 0.5 + 0.5 * np.sin(2 * np.pi * x / 4)
    elif kind == 1:  # oblique grating, 6 px period
        v = 0.5 + 0.5 * np.sin(2 * np.pi * (x + y) / (6 * math.sqrt(2)))
    elif kind == 2:  # zone plate: every frequency up to Nyquist at the corners
        r2 = (x - side / 2) ** 2 + (y - side / 2) ** 2
        v = 0.5 + 0.5 * np.cos(np.pi * r2 / (2 * side))
    elif kind == 3:  # 2 px checkerboard
        v = ((x // 2 + y // 2) % 2).astype(np.float64)
    else:  # one-pixel hairlines every 5 px
        v = 1.0 - 0.85 * ((x % 5 == 0) | (y % 7 == 0))
    rgb = np.stack([v, v * 0.8 + 0.1, 1.0 - 0.7 * v], axis=-1)
    return Image.fromarray((rgb * 255).round().astype(np.uint8))


def _small_print(rng: np.random.Generator, side: int) -> Image.Image:
    image = Image.new("RGB", (side, side), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = _font("DejaVuSansMono.ttf", max(6, side // 24))
    chars = "0123456789abcdefghijklmnopqrstuvwxyz#%&@"
    for row in range(0, side, font.size + 1):
        draw.text((1, row), "".join(rng.choice(list(chars), size=side // 4)), font=font, fill=(0, 0, 0))
    return image


@functools.cache
def builtin_set(key: str, resolution: int) -> tuple[SetItem, ...]:
    """The items of built-in set ``key`` (one of :data:`SETS`) at ``resolution``, deterministic."""
    if key not in SETS:
        raise VtokError(f"unknown VTBench set {key!r}; choose from {', '.join(SETS)}")
    rng = np.random.default_rng([SEED, SETS.index(key), resolution])
    side = page_side(resolution)
    items: list[SetItem] = []
    if key == "documents":
        for b, (group, band) in enumerate(PRINT_BANDS.items()):
            for i in range(PAGES_PER_BAND):
                image, text = _document(rng, side, band)
                items.append(SetItem(f"document_{b * PAGES_PER_BAND + i:02d}", image, text, "latin", group))
    elif key == "posters":
        photos = photo_names("all")
        for i in range(8):
            image, text = _poster(rng, side, photo(photos[(i * 5) % len(photos)]), i)
            items.append(SetItem(f"poster_{i:02d}", image, text, "latin"))
    elif key == "multilingual":
        for script in MULTILINGUAL:
            for page in range(2):
                image, text = _multilingual(rng, side, script, page)
                items.append(SetItem(f"{script}_{page}", image, text, script))
    elif key == "detail":
        for kind in range(5):
            items.append(SetItem(f"pattern_{kind}", _detail_pattern(kind, resolution)))
        items.append(SetItem("small_print", _small_print(rng, resolution)))
        for name in ("brick", "grass", "gravel", "hubble_deep_field", "coffee", "china"):
            image = photo(name)
            # A tight crop (a quarter of the short side), so the texture's grain is near pixel scale.
            s = min(image.size) // 4
            left, top = (image.width - s) // 2, (image.height - s) // 2
            items.append(
                SetItem(f"texture_{name}", center_crop_arr(image.crop((left, top, left + s, top + s)), resolution))
            )
    elif key == "highres":
        for name in photo_names("heldout") + ["astronaut", "china"]:
            items.append(SetItem(f"highres_{name}", center_crop_arr(photo(name), 4 * resolution)))
    else:  # varying
        names = photo_names("heldout")
        for i, (aw, ah) in enumerate(ASPECTS):
            short = max(resolution, 48)  # below 48 px, rounding to 16 would merge aspect ratios
            w, h = (short * aw // ah, short) if aw >= ah else (short, short * ah // aw)
            w, h = max(16, round(w / 16) * 16), max(16, round(h / 16) * 16)
            items.append(SetItem(f"varying_{h}x{w}", cover_crop(photo(names[i % len(names)]), w, h)))
    return tuple(items)


def cover_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale ``image`` to cover ``width`` x ``height`` (aspect kept, LANCZOS), then crop the centre.

    VTBench's preprocessing for square inputs (``lock_ratio`` with ``center_crop``),
    written for any target shape.
    """
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    image = image.resize(size, Image.LANCZOS) if size != image.size else image
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def write_set(items: tuple[SetItem, ...] | list[SetItem], folder: str | Path) -> Path:
    """Write the images as PNG and their text to ``texts.tsv`` (name, script, group, text) in ``folder``."""
    from vtok.io import atomic_dir

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        lines = []
        for item in items:
            item.image.save(tmp / f"{item.name}.png")
            if item.text is not None:
                lines.append(f"{item.name}\t{item.script or ''}\t{item.group or ''}\t{item.text}\n")
        if lines:
            (tmp / "texts.tsv").write_text("".join(lines), encoding="utf-8")
    return folder
