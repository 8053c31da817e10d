"""Network blocks by family, shared by encoders and decoders: one module per published network.

- :mod:`vtok.nets.vqgan`: VQGAN's CNN blocks (taming-transformers, LlamaGen);
- :mod:`vtok.nets.magvit2`: MAGVIT-v2's CNN blocks (Open-MAGVIT2);
- :mod:`vtok.nets.unitok`: UniTok's attention projection, GeGLU and ViTamin upsampler blocks;
- :mod:`vtok.nets.vit`: the ViT blocks of the 1D tokenizers (TiTok);
- :mod:`vtok.nets.patch`: the shape of vtok's patch network, built from VQGAN's residual blocks.

Part of the core: the part packages import these modules, never the other way round.
"""
