"""Pixel decoders. Importing this package registers them."""

from vtok.decoders import conv  # noqa: F401
