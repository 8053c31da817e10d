"""Reference "tokenizers" every score is read against: identity, downscale-upscale, JPEG.

Each is a reconstruct function (B, 3, H, W) in [-1, 1] -> same shape, usable wherever
a tokenizer's ``decode(encode(x))`` is.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from PIL import Image

from vtok.images import pil_to_tensor, tensor_to_pil


def identity() -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: x.clone()


def downscale(factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Bicubic down by ``factor`` and back up (PIL, on 8-bit images)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = []
        for img in x:
            pil = tensor_to_pil(img)
            small = pil.resize((max(1, pil.width // factor), max(1, pil.height // factor)), Image.BICUBIC)
            out.append(pil_to_tensor(small.resize(pil.size, Image.BICUBIC)))
        return torch.stack(out)

    return run


def jpeg(quality: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """JPEG round trip at ``quality`` (PIL, 4:2:0 chroma subsampling as its default)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        out = []
        for img in x:
            buf = io.BytesIO()
            tensor_to_pil(img).save(buf, format="JPEG", quality=quality)
            buf.seek(0)
            out.append(pil_to_tensor(Image.open(buf).convert("RGB")))
        return torch.stack(out)

    return run


BASELINES: dict[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]] = {
    "identity": identity,
    "downscale_x2": lambda: downscale(2),
    "downscale_x4": lambda: downscale(4),
    "jpeg_q90": lambda: jpeg(90),
    "jpeg_q50": lambda: jpeg(50),
    "jpeg_q10": lambda: jpeg(10),
}
