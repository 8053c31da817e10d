"""TokenFlow's released tokenizers (ByteFlow-AI/TokenFlow, ``TokenFlow`` in ``tokenizer/vq_model.py``) as vtok's ``tokenflow``.

The state dict (``"ema"`` where training kept one, as TokenFlow's loaders prefer it, else ``"model"``) holds:

- ``encoder.*`` / ``decoder.*``: LlamaGen's CNN (``conv_blocks.{i}.res/attn/downsample``,
  ``mid.{0,1,2}``; the decoder's block 0 the lowest resolution), renamed as for
  ``llamagen-vq``; the "enhanced" decoder is the same layout wider (ch 256, 4 blocks).
- ``quant_conv``, ``post_quant_conv`` (pixel half only): names kept.
- ``quantize.embedding_vqkd.weight`` (K x 32) and ``quantize.embedding_vqgan.weight`` (K x 8): the two
  codebooks of ``tokenflow_learned`` (read l2-normalised, as TokenFlow does); ``quantize.codebook_used``
  (a usage counter for logging) is dropped.
- ``encoder_vqkd.*``: the CLIP ViT-B/16 semantic encoder (OpenAI's names, ``proj`` deleted) -> the
  ``open_clip`` encoder; ``encode_task_layer.{0,2}`` -> ``semantic_in``.
- ``decoder_vqkd.*``: BEiT-v2's ViT (names as timm's ``Beit``) and ``decode_task_layer.{0,2}`` -> the
  ``vit`` semantic decoder.

Both position tables are stored for 14x14 patches (CLIP at 224 px). TokenFlow's released
text-to-image setting runs 256 px images (``--image-size 256 --infer_interpolate``): its
forward resizes both tables each call with the DINO recipe (bicubic, ``scale_factor``
(16 + 0.1) / 14); the converter applies that same operation once, so the converted model
computes the same numbers. ``--config`` takes a YAML/JSON with ``image_size`` (224: the tables
as stored, scales 1..14; 256, the default: scales 1..16) and, for other sizes, TokenFlow's
``scale_rq_layers``.

Only the CLIP variant (``clipb_224``) maps onto vtok's parts so far: the SigLIP
(``tokenflow_siglip_32k``, transformers' ``SiglipVisionModel``) and ViTamin (timm) semantic encoders
are refused with a one-line error.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from vtok.convert.common import count_levels, rename
from vtok.convert.registry import source
from vtok.errors import VtokError

CLIP_SCALES = {224: [1, 2, 4, 6, 8, 10, 12, 14], 256: [1, 2, 4, 6, 8, 10, 12, 14, 16]}
DROPPED = {"quantize.codebook_used"}  # a rolling log of recent ids, for the usage statistic only
PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.embedding_vq", "encoder_vqkd.",
            "encode_task_layer.", "decoder_vqkd.", "decode_task_layer.")  # fmt: skip


def dino_resize(table: torch.Tensor, side: int) -> torch.Tensor:
    """(1 + n^2, D) position table (class row first) -> (1 + side^2, D), as TokenFlow's forward resizes it."""
    n = int(math.sqrt(table.shape[0] - 1))
    if n == side:
        return table
    grid = table[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    scale = (side + 0.1) / math.sqrt(n * n)
    grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic")
    return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(side * side, -1)], dim=0)


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
    enc = {"name": "conv", "ch": ch, "ch_mult": mult, "num_res_blocks": blocks, "attn_levels": enc_attn, "z_channels": z}
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
    config_help="image_size (256 or 224), scale_rq_layers (optional)",
    entries=("ema", "model"),  # TokenFlow's loaders read the EMA weights first
)
def tokenflow(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if any(k.startswith("encoder_vqkd.vision_model.") for k in state):
        raise VtokError("TokenFlow's SigLIP tokenizer (transformers' SiglipVisionModel) is not supported yet; clipb is")
    if "encoder_vqkd.conv1.weight" not in state:
        raise VtokError("TokenFlow's ViTamin tokenizer (timm) is not supported yet; clipb (CLIP ViT-B/16) is")
    source_cfg = source_cfg or {}
    image_size = int(source_cfg.get("image_size", 256))
    patch = state["encoder_vqkd.conv1.weight"].shape[-1]
    side = image_size // patch
    scales = [int(s) for s in source_cfg.get("scale_rq_layers") or CLIP_SCALES.get(image_size, [])]
    if not scales or scales[-1] != side:
        raise VtokError(
            f"TokenFlow clipb at {image_size} px has a {side}x{side} grid: give scale_rq_layers ending in {side} "
            "(224 and 256 px have TokenFlow's own)"
        )
    state = {k: v for k, v in state.items() if k not in DROPPED}
    unknown = sorted(k for k in state if not k.startswith(PREFIXES))
    if unknown:
        raise VtokError(f"TokenFlow clipb checkpoint has tensors no vtok part takes: {', '.join(unknown[:4])}")
    enc, dec, rules = _cnn(state)
    mapped = {rename(k, rules): v for k, v in state.items() if k.split(".")[0] in ("encoder", "decoder")}
    for key in ("quant_conv.weight", "quant_conv.bias", "post_quant_conv.weight", "post_quant_conv.bias"):
        mapped[key] = state[key]
    semantic, pixel = state["quantize.embedding_vqkd.weight"], state["quantize.embedding_vqgan.weight"]
    mapped["quantizer.semantic_codes"], mapped["quantizer.pixel_codes"] = semantic, pixel
    for key, value in state.items():
        if key.startswith("encoder_vqkd."):
            name = key[len("encoder_vqkd.") :]
            mapped["semantic_encoder.net." + name] = dino_resize(value, side) if name == "positional_embedding" else value
        elif key.startswith("encode_task_layer."):
            mapped["semantic_in." + key[len("encode_task_layer.") :]] = value
    sem_dec, dec_mapped = _semantic_decoder(state, side)
    mapped.update(dec_mapped)
    width = state["encoder_vqkd.conv1.weight"].shape[0]
    layers = count_levels(state, r"encoder_vqkd\.transformer\.resblocks\.(\d+)\.")
    clip = {"name": "open_clip", "model": "ViT-B-16", "image_size": image_size, "quick_gelu": True}
    if (width, layers, patch) != (768, 12, 16):  # another CLIP than ViT-B/16: its sizes, OpenAI's 64-d heads
        clip.update(width=width, layers=layers, patch_size=patch)
    cfg = {
        "name": "tokenflow",
        "encoder": enc,
        "decoder": dec,
        "quantizer": {"name": "tokenflow_learned", "semantic_dim": semantic.shape[1], "pixel_dim": pixel.shape[1],
                      "codebook_size": semantic.shape[0], "scales": scales},  # fmt: skip
        "semantic_encoder": clip,
        "semantic_decoder": sem_dec,
    }
    return cfg, mapped
