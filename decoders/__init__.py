"""Pixel decoders. Importing this package registers them."""

import vtok.decoders.flextok_flow  # noqa: F401
from vtok.decoders import conv, flow, magvit2, patch, patch1d, pixel_heads, semantic_vit, vit  # noqa: F401
