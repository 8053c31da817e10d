"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import conv, flow, patch, pixel_heads, vit  # noqa: F401
