"""TokenFlow's released tokenizers (ByteFlow-AI/TokenFlow, ``TokenFlow`` in ``tokenizer/vq_model.py``) as vtok's ``tokenflow``.

The state dict (``"ema"`` where training kept one, as TokenFlow's loaders prefer it, else ``"model"``) holds:

- ``encoder.*`` / ``decoder.*``: LlamaGen's CNN (``conv_blocks.{i}.res/attn/downsample``,
  ``mid.{0,1,2}``; the decoder's block 0 the lowest resolution), renamed as for
  ``llamagen-vq``; the "enhanced" decoder is the same layout wider (ch 256, 4 blocks).
- ``quant_conv``, ``post_quant_conv`` (pixel half only): names kept.
- ``quantize.embedding_vqkd.weight`` (K x 32) and ``quantize.embedding_vqgan.weight`` (K x 8): the two
  codebooks of ``tokenflow_learned`` (read l2-normalised, as TokenFlow does); ``quantize.codebook_used``
  (a usage counter for logging) is dropped.
- ``encoder_vqkd.*``: the semantic tower, one of TokenFlow's three teachers
  (:mod:`vtok.convert.tokenflow_towers`): CLIP ViT-B/16 (``clipb_224``) -> ``open_clip``; SigLIP
  So400m/14-384 (``siglip_384``, transformers' names) -> ``siglip_layer``; ViTamin-XL
  (``vitamin_xlarge_256``, timm's names) -> ``timm_vitamin``. ``encode_task_layer.{0,2}`` -> ``semantic_in``.
- ``decoder_vqkd.*``: BEiT-v2's ViT (names as timm's ``Beit``) and ``decode_task_layer.{0,2}`` -> the
  ``vit`` semantic decoder (12 heads: not in the weights, TokenFlow's default for every teacher).

Image sizes and scales, not in the weights (``--config``: a YAML/JSON with ``image_size`` and, for
other sizes, TokenFlow's ``scale_rq_layers``; ``vitamin_heads`` for a ViTamin of another width):

- clipb: both position tables are stored for 14x14 patches (CLIP at 224 px). TokenFlow's released
  text-to-image setting runs 256 px images (``--image-size 256 --infer_interpolate``): its forward
  resizes both tables each call with the DINO recipe (bicubic, ``scale_factor`` (16 + 0.1) / 14);
  the converter applies that same operation once, so the converted model computes the same numbers.
  ``image_size`` 224 (the tables as stored, scales 1..14) or 256, the default (scales 1..16).
- siglip: 384 px (27 x 27 tokens), scales 1..10, 12, 14, 17, 22, 27. TokenFlow runs the pixel branch
  at 16 x 27 = 432 px (the images bicubic-resized up, the decoded ones back to 384): ``pixel_size``.
- vitamin: 256 px (16 x 16 tokens), scales 1, 2, 4, ..., 16.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.convert.common import count_levels, rename
from vtok.convert.registry import source
from vtok.convert.tokenflow_towers import (
    check_scaling,
    clip_tower,
    dino_resize,
    siglip_tower,
    teacher,
    tower_grid,
    vitamin_tower,
)
from vtok.errors import VtokError

SCALES = {  # TokenFlow's scale_rq_layers per teacher and image size
    ("clipb", 224): [1, 2, 4, 6, 8, 10, 12, 14],
    ("clipb", 256): [1, 2, 4, 6, 8, 10, 12, 14, 16],
    ("siglip", 384): [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 17, 22, 27],
    ("vitamin", 256): [1, 2, 4, 6, 8, 10, 12, 14, 16],
}
IMAGE_SIZE = {"clipb": 256, "siglip": 384, "vitamin": 256}  # the released / reconstruction scripts' sizes
DROPPED = {"quantize.codebook_used"}  # a rolling log of recent ids, for the usage statistic only
PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.embedding_vq", "encoder_vqkd.",
            "encode_task_layer.", "decoder_vqkd.", "decode_task_layer.")  # fmt: skip


def _cnn(state: dict[str, torch.Tensor]) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    """The encoder's and decoder's ``conv`` configs from their weights, and LlamaGen -> vtok renames."""
    n = count_levels(state, r"encoder\.conv_blocks\.(\d+)\.")
    ch = state["encoder.conv_in.weight"].shape[0]
    blocks = count_levels(state, r"encoder\.conv_blocks\.0\.res\.(\d+)\.")
    mult = [state[f"encoder.conv_blocks.{i}.res.{blocks - 1}.conv2.weight"].shape[0] // ch for i in range(n)]
    z = state["encoder.conv_out.weight"].shape[0]
    dch = state["decoder.conv_out.weight"].shape[1]  # the decoder's top level has ch * ch_mult[0] = ch channels
    dblocks = count_levels(state, r"decoder\.conv_blocks\.0\.res\.(\d+)\.") - 1
    dmult = [state[f"decoder.conv_blocks.{n - 1 - i}.res.0.conv2.weight"].shape[0] // dch for i in range(n)]
    rules = [(f"{side}.mid.{k}.", f"{side}.mid.{name}.") for side in ("encoder", "decoder")
             for k, name in enumerate(("block_1", "attn_1", "block_2"))]  # fmt: skip
    for i in range(n):
        level = n - 1 - i  # LlamaGen's decoder block 0 is the lowest resolution
        rules += [(f"encoder.conv_blocks.{i}.res.", f"encoder.down.{i}.block."),
                  (f"encoder.conv_blocks.{i}.attn.", f"encoder.down.{i}.attn."),
                  (f"encoder.conv_blocks.{i}.downsample.", f"encoder.down.{i}.downsample."),
                  (f"decoder.conv_blocks.{i}.res.", f"decoder.up.{level}.block."),
                  (f"decoder.conv_blocks.{i}.attn.", f"decoder.up.{level}.attn."),
                  (f"decoder.conv_blocks.{i}.upsample.", f"decoder.up.{level}.upsample.")]  # fmt: skip
    enc_attn = [i for i in range(n) if f"encoder.conv_blocks.{i}.attn.0.q.weight" in state]
    dec_attn = [n - 1 - i for i in range(n) if f"decoder.conv_blocks.{i}.attn.0.q.weight" in state]
    enc = {
        "name": "conv",
        "ch": ch,
        "ch_mult": mult,
        "num_res_blocks": blocks,
        "attn_levels": enc_attn,
        "z_channels": z,
    }
    dec = {"name": "conv", "ch": dch, "ch_mult": dmult, "num_res_blocks": dblocks, "attn_levels": sorted(dec_attn),
           "z_channels": z}  # fmt: skip
    return enc, dec, rules


def _semantic_decoder(state: dict[str, torch.Tensor], side: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """BEiT-v2's ViT + task layer -> the ``vit`` semantic decoder's config and tensors."""
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("decoder_vqkd."):  # timm's Beit has BEiT's names
            name = key[len("decoder_vqkd.") :]
            mapped["semantic_decoder.vit." + name] = dino_resize(value[0], side)[None] if name == "pos_embed" else value
        elif key.startswith("decode_task_layer."):
            mapped["semantic_decoder.head." + key[len("decode_task_layer.") :]] = value
    width = state["decoder_vqkd.cls_token"].shape[-1]
    cfg = {
        "name": "vit",
        "in_channels": state["decoder_vqkd.patch_embed.proj.weight"].shape[1],
        "out_channels": state["decode_task_layer.2.weight"].shape[0],
        "width": width,
        "depth": count_levels(state, r"decoder_vqkd\.blocks\.(\d+)\."),
        "heads": 12,  # not in the weights: TokenFlow's default for every teacher (get_model_default_params)
        "grid": side,
    }
    return cfg, mapped


@source(
    "tokenflow",
    "TokenFlow",
    marker="quantize.embedding_vqkd.",
    contains=("llamagen-vq",),  # LlamaGen's CNN layout for the pixel branch
    takes_config=True,
    config_help="image_size (clipb: 256 or 224; siglip 384; vitamin 256), scale_rq_layers, vitamin_heads (optional)",
    entries=("ema", "model"),  # TokenFlow's loaders read the EMA weights first
)
def tokenflow(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    kind = teacher(state)
    source_cfg = source_cfg or {}
    image_size = int(source_cfg.get("image_size", IMAGE_SIZE[kind]))
    side = tower_grid(state, kind, image_size)
    scales = [int(s) for s in source_cfg.get("scale_rq_layers") or SCALES.get((kind, image_size), [])]
    if not scales or scales[-1] != side:
        raise VtokError(
            f"TokenFlow {kind} at {image_size} px has a {side}x{side} grid: give scale_rq_layers ending in {side} "
            f"(TokenFlow's own: {', '.join(f'{k} {n} px' for k, n in SCALES)})"
        )
    check_scaling(state, kind)
    state = {k: v for k, v in state.items() if k not in DROPPED and not k.startswith("scaling_layer.")}
    unknown = sorted(k for k in state if not k.startswith(PREFIXES))
    if unknown:
        raise VtokError(f"TokenFlow {kind} checkpoint has tensors no vtok part takes: {', '.join(unknown[:4])}")
    enc, dec, rules = _cnn(state)
    mapped = {rename(k, rules): v for k, v in state.items() if k.split(".")[0] in ("encoder", "decoder")}
    for key in ("quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight", "post_quant_conv.bias"):
        mapped[key] = state[key]
    semantic, pixel = state["quantize.embedding_vqkd.weight"], state["quantize.embedding_vqgan.weight"]
    mapped["quantizer.semantic_codes"], mapped["quantizer.pixel_codes"] = semantic, pixel
    if kind == "clipb":
        tower, tensors = clip_tower(state, image_size, side)
    elif kind == "siglip":
        tower, tensors = siglip_tower(state, image_size, side)
    else:
        tower, tensors = vitamin_tower(state, image_size, source_cfg.get("vitamin_heads"))
    mapped.update(tensors)
    for key, value in state.items():
        if key.startswith("encode_task_layer."):
            mapped["semantic_in." + key[len("encode_task_layer.") :]] = value
    sem_dec, dec_mapped = _semantic_decoder(state, side)
    mapped.update(dec_mapped)
    cfg = {
        "name": "tokenflow",
        "encoder": enc,
        "decoder": dec,
        "quantizer": {
            "name": "tokenflow_learned",
            "semantic_dim": semantic.shape[1],
            "pixel_dim": pixel.shape[1],
            "codebook_size": semantic.shape[0],
            "scales": scales,
        },  # fmt: skip
        "semantic_encoder": tower,
        "semantic_decoder": sem_dec,
    }
    if kind == "siglip":  # TokenFlow's pixel branch runs at 16 x the SigLIP grid (2**4, its CNN's factor)
        cfg["pixel_size"] = 2 ** (len(enc["ch_mult"]) - 1) * side
    return cfg, mapped
