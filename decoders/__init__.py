"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import conv, flow, magvit2, patch, patch1d, pixel_heads, semantic_vit, vit  # noqa: F401
from vtok.decoders import gigatok as _gigatok_decoder  # noqa: F401
from vtok.decoders import gigatok2d as _gigatok2d_decoder  # noqa: F401
