"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import (  # noqa: F401
    conv,
    flextok_flow,
    flow,
    gigatok,
    gigatok2d,
    magvit2,
    patch,
    patch1d,
    pixel_heads,
    semantic_vit,
    unitok,
    vit,
)
