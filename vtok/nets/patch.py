"""The shape of vtok's patch network (its own, not a published one), shared by the patch encoders and decoders.

The network is a linear p x p patch embedding, then VQGAN's residual blocks
(:mod:`vtok.nets.vqgan`) on the p-times smaller latent grid; the 1D variant adds a
global linear map between that grid and N latent tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from vtok.config import AT_LEAST_1, NON_NEGATIVE, ranged
from vtok.errors import VtokError


@dataclass
class PatchShape:
    """What the patch encoder and decoder share: patch size, width and residual blocks of the latent grid,
    latent channels."""

    # Side p of a square patch in pixels: the latent grid is p times smaller than the image
    patch_size: int = ranged(8, AT_LEAST_1)
    width: int = ranged(128, AT_LEAST_1)  # channels of the residual blocks on the latent grid (a multiple of 32)
    # Residual blocks on the latent grid (zero-initialised: training starts from the linear patch code)
    num_blocks: int = ranged(2, NON_NEGATIVE)
    z_channels: int = ranged(64, AT_LEAST_1)  # channels of the latent grid (the encoder's output, the decoder's input)

    def __post_init__(self) -> None:
        for name in ("width", *(["refine_width"] if hasattr(self, "refine_width") else [])):
            if getattr(self, name) % 32:
                raise VtokError(f"{name} must be a multiple of 32 (the blocks' GroupNorm has 32 groups)")


@dataclass
class Patch1DShape(PatchShape):
    """The patch network's shape plus the fixed image size and the number of latent tokens."""

    # Side of the square images in pixels (a multiple of patch_size); other sizes are refused
    image_size: int = ranged(64, AT_LEAST_1)
    # 1D tokens per image: one linear map reads them out of the whole latent grid (the decoder maps them back alike)
    num_latent_tokens: int = ranged(32, AT_LEAST_1)
    # Channels of each latent token (the encoder's output, the decoder's input)
    token_width: int = ranged(64, AT_LEAST_1)

    def grid(self) -> int:
        if self.image_size % self.patch_size:
            raise VtokError("patch1d: image_size must be a multiple of patch_size")
        return self.image_size // self.patch_size
