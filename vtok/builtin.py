"""The built-in sample set: real photographs that PyPI packages ship, cut into crops.

scikit-image, scikit-learn and matplotlib each ship a few photographs inside
their wheels, so this set exists offline on every machine that has them. The
split is by photograph (no held-out crop shares pixels with a training crop),
and the crops are a pure function of the image size.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import Image

from vtok.errors import VtokError
from vtok.images import center_crop_arr, to_rgb

# (package, path inside the package) of each photograph; grayscale ones become RGB.
_SKIMAGE = (
    "astronaut.png coffee.png chelsea.png rocket.jpg motorcycle_left.png hubble_deep_field.jpg ihc.png "
    "retina.jpg camera.png coins.png moon.png page.png brick.png grass.png gravel.png"
).split()
PHOTOS = {
    **{Path(name).stem: ("skimage", f"data/{name}") for name in _SKIMAGE},
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
HELD_OUT = ("chelsea", "flower", "rocket", "coins")

# Crop windows as (side as a fraction of the short side, x, y as fractions of the free room).
_WINDOWS = (
    (1.0, 0.5, 0.5),
    *((0.6, x, y) for x in (0.0, 0.5, 1.0) for y in (0.0, 1.0)),
    *((0.35, x, y) for x in (0.15, 0.5, 0.85) for y in (0.2, 0.8)),
)

WINDOWS_PER_PHOTO = len(_WINDOWS)


def _package_dir(package: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise VtokError(f"the built-in sample set needs the '{package}' package: pip install 'vtok[data]'")
    return Path(spec.origin).parent


@functools.cache
def photo(name: str) -> Image.Image:
    """One built-in photograph as RGB."""
    if name not in PHOTOS:
        raise VtokError(f"no built-in photo {name!r}; available: {', '.join(PHOTOS)}")
    package, rel = PHOTOS[name]
    path = _package_dir(package) / rel
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


def photo_names(split: str) -> list[str]:
    """Names of the photographs in ``split`` ("train", "heldout" or "all")."""
    if split == "all":
        return list(PHOTOS)
    if split == "heldout":
        return list(HELD_OUT)
    if split == "train":
        return [n for n in PHOTOS if n not in HELD_OUT]
    raise VtokError(f"unknown built-in split {split!r}; use train, heldout or all")


def builtin_crops(split: str, size: int) -> list[tuple[str, Image.Image]]:
    """Deterministic ``size`` x ``size`` crops of the photographs in ``split``, with names."""
    out = []
    for name in photo_names(split):
        image = photo(name)
        w, h = image.size
        for i, (frac, fx, fy) in enumerate(_WINDOWS):
            side = int(min(w, h) * frac)
            left, top = int((w - side) * fx), int((h - side) * fy)
            crop = image.crop((left, top, left + side, top + side))
            out.append((f"{name}_{i:02d}", center_crop_arr(crop, size)))
    return out
