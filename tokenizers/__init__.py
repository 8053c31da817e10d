"""Tokenizer families, their encoders and quantizers, losses and training.

Importing this package registers every part it holds.
"""

from vtok.tokenizers import grid  # noqa: F401
from vtok.tokenizers.encoders import conv  # noqa: F401
from vtok.tokenizers.losses import discriminator, perceptual, vqgan  # noqa: F401
from vtok.tokenizers.quantizers import rvq, vq  # noqa: F401
