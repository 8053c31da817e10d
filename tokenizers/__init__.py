"""Tokenizer families, their encoders and quantizers, losses and training.

Importing this package registers every part it holds.
"""

from vtok.tokenizers import dual, dualtoken_model, grid, halting, oned, ordering, teachers, tokenflow_model  # noqa: F401
from vtok.tokenizers.encoders import (  # noqa: F401
    conv,
    flextok,
    gigatok,
    gigatok2d,
    magvit2,
    openclip,
    patch,
    patch1d,
    siglip_layer,
    timm_siglip,
    timm_vitamin,
    unitok,
    vit,
)
from vtok.tokenizers.losses import discriminator, perceptual, semantic, vqgan  # noqa: F401
from vtok.tokenizers.quantizers import (  # noqa: F401
    dual_rvq,
    fsq,
    ibq,
    lfq,
    mcq,
    msvq,
    residual_scalar,
    rq_shared,
    rq_shared_step,
    rvq,
    simvq,
    tokenflow,
    tokenflow_learned,
    vq,
    vq_learned,
    vq_learned_rotation,
)
