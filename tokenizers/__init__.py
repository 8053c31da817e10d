"""Tokenizer families, their encoders and quantizers, losses and training.

Importing this package registers every part it holds.
"""

import vtok.tokenizers.encoders.flextok  # noqa: F401
from vtok.tokenizers import dual, grid, oned, ordering, teachers, tokenflow_model  # noqa: F401
from vtok.tokenizers.encoders import conv, magvit2, openclip, patch, patch1d, vit  # noqa: F401
from vtok.tokenizers.losses import discriminator, perceptual, semantic, vqgan  # noqa: F401
from vtok.tokenizers.quantizers import (  # noqa: F401
    dual_rvq,
    fsq,
    lfq,
    msvq,
    residual_scalar,
    rq_shared,
    rvq,
    simvq,
    tokenflow,
    tokenflow_learned,
    vq,
    vq_learned,
)
