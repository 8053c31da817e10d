"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import conv, flow, magvit2, patch, patch1d, pixel_heads, semantic_vit, unitok, vit  # noqa: F401
