"""Tokenizer families, their encoders and quantizers, losses and training.

Importing this package registers every part it holds.
"""

from vtok.tokenizers import dual, grid, oned, ordering, teachers  # noqa: F401
from vtok.tokenizers.encoders import conv, patch, vit  # noqa: F401
from vtok.tokenizers.losses import discriminator, perceptual, vqgan  # noqa: F401
from vtok.tokenizers.quantizers import dual_rvq, fsq, msvq, rvq, tokenflow, vq, vq_learned  # noqa: F401
