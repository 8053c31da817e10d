"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import conv, flow, vit  # noqa: F401
