"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import conv, vit  # noqa: F401
