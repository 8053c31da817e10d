"""The semantic towers of TokenFlow's released tokenizers (``encoder_vqkd.*``) -> vtok's encoder parts.

Three teachers, told apart by their keys (``tokenizer/vq_model.py``'s ``teacher``):

- ``clipb_224``: OpenAI's CLIP ViT-B/16 (``conv1``, ``transformer.resblocks``; ``proj`` deleted) -> ``open_clip``;
  the position table resized once with TokenFlow's DINO recipe where the grid differs.
- ``siglip_384``: transformers' ``SiglipVisionModel`` of SigLIP So400m/14-384 (``vision_model.*``), mapped
  as DualToken's tower is (:func:`vtok.convert.dualtoken._tower`: q/k/v fused, names as timm's) -> the
  ``siglip_layer`` encoder reading ``hidden_states[-2]`` (the tokens after all blocks but the last, no
  final LayerNorm). The last block, ``post_layernorm`` and the pooling ``head`` are loaded and unused,
  as in TokenFlow (kept frozen there). ``position_ids`` (an index buffer of 0..L-1) is dropped.
- ``vitamin_xlarge_256``: timm's ViTamin with ``head`` and ``fc_norm`` deleted, names as timm's ->
  the ``timm_vitamin`` encoder; its heads are not in the weights (16 for ViTamin-XL's width 1152).

SigLIP's and ViTamin's ``scaling_layer.{shift,scale}`` (the input normalisation's constants, saved as
buffers) are checked equal to what ``siglip_layer`` / ``timm_vitamin`` apply, and dropped.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from vtok.convert.common import count_levels
from vtok.convert.dualtoken import VISION, _tower
from vtok.errors import VtokError

SIGLIP = "encoder_vqkd.vision_model."
VITAMIN = "encoder_vqkd.patch_embed.backbone."
VITAMIN_HEADS = {1152: 16, 1024: 16, 768: 12, 384: 6}  # timm's ViTamin XL, L, B, S
VITAMIN_XL = (1152, 32, 192, [192, 384], [2, 4])  # width, depth, stem, stage widths and depths
# TokenFlow's ScalingLayerForSigLip / ScalingLayerForClip constants (shift, scale), saved as buffers.
SCALING = {"siglip": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
           "vitamin": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))}  # fmt: skip


def check_scaling(state: dict[str, torch.Tensor], kind: str) -> None:
    """TokenFlow's ``scaling_layer.{shift,scale}`` buffers (SigLIP, ViTamin) are the constants vtok's towers apply."""
    if kind not in SCALING:
        return
    for name, want in zip(("shift", "scale"), SCALING[kind]):
        got = state.get(f"scaling_layer.{name}")
        if got is None or not torch.equal(got.flatten().float(), torch.tensor(want)):
            raise VtokError(f"TokenFlow {kind} checkpoint's scaling_layer.{name} is not TokenFlow's {want}")


def teacher(state: dict[str, torch.Tensor]) -> str:
    """Which of TokenFlow's teachers the checkpoint's semantic tower is: clipb, siglip or vitamin."""
    prefixes = {"clipb": "encoder_vqkd.conv1.", "siglip": SIGLIP, "vitamin": VITAMIN}
    kinds = [kind for kind, prefix in prefixes.items() if any(k.startswith(prefix) for k in state)]
    if len(kinds) > 1:
        raise VtokError(f"TokenFlow checkpoint's semantic tower (encoder_vqkd) mixes {' and '.join(kinds)} tensors")
    if not kinds:
        raise VtokError("TokenFlow checkpoint's semantic tower (encoder_vqkd) is not CLIP, SigLIP or ViTamin")
    return kinds[0]


def dino_resize(table: torch.Tensor, side: int) -> torch.Tensor:
    """(1 + n^2, D) position table (class row first) -> (1 + side^2, D), as TokenFlow's forward resizes it."""
    n = int(math.sqrt(table.shape[0] - 1))
    if n == side:
        return table
    grid = table[1:].reshape(1, n, n, -1).permute(0, 3, 1, 2)
    scale = (side + 0.1) / math.sqrt(n * n)
    grid = F.interpolate(grid, scale_factor=(scale, scale), mode="bicubic")
    return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(side * side, -1)], dim=0)


def tower_grid(state: dict[str, torch.Tensor], kind: str, image_size: int) -> int:
    """The semantic tower's token grid side at ``image_size`` px."""
    if kind == "clipb":
        return image_size // state["encoder_vqkd.conv1.weight"].shape[-1]
    if kind == "siglip":
        return image_size // state[f"{SIGLIP}embeddings.patch_embedding.weight"].shape[-1]
    return image_size // 16  # ViTamin: stem, two MBConv stages, strided convolution (2 each)


def clip_tower(state: dict[str, torch.Tensor], image_size: int, side: int) -> tuple[dict, dict]:
    """OpenAI's CLIP vision tower -> the ``open_clip`` encoder's config and ``semantic_encoder.net.*`` tensors."""
    out = {}
    for key, value in state.items():
        if key.startswith("encoder_vqkd."):
            name = key[len("encoder_vqkd.") :]
            out["semantic_encoder.net." + name] = dino_resize(value, side) if name == "positional_embedding" else value
    width, patch = state["encoder_vqkd.conv1.weight"].shape[0], state["encoder_vqkd.conv1.weight"].shape[-1]
    layers = count_levels(state, r"encoder_vqkd\.transformer\.resblocks\.(\d+)\.")
    cfg: dict[str, Any] = {"name": "open_clip", "model": "ViT-B-16", "image_size": image_size, "quick_gelu": True}
    if (width, layers, patch) != (768, 12, 16):  # another CLIP than ViT-B/16: its sizes, OpenAI's 64-d heads
        cfg.update(width=width, layers=layers, patch_size=patch)
    return cfg, out


def siglip_tower(state: dict[str, torch.Tensor], image_size: int, side: int) -> tuple[dict, dict]:
    """transformers' SigLIP vision tower -> the ``siglip_layer`` encoder (hidden_states[-2]) and its tensors."""
    table = state[f"{SIGLIP}embeddings.position_embedding.weight"]
    if table.shape[0] != side * side:
        raise VtokError(
            f"TokenFlow SigLIP's position table has {table.shape[0]} rows, not {side}x{side} at {image_size} px"
        )
    tower = {VISION + k[len(SIGLIP) :]: v for k, v in state.items() if k.startswith(SIGLIP) and "position_ids" not in k}
    try:
        cfg, mapped = _tower(tower, image_size)
    except KeyError as err:  # name the key as TokenFlow's file has it
        raise KeyError(str(err.args[0]).replace(VISION, SIGLIP)) from None
    depth = count_levels(state, r"encoder_vqkd\.vision_model\.encoder\.layers\.(\d+)\.")
    if depth < 2:
        raise VtokError(
            "TokenFlow SigLIP's tower has one block: it reads hidden_states[-2], the output of the one before"
        )
    cfg.update(name="siglip_layer", layer=depth - 1)  # transformers' hidden_states[-2]: after all blocks but the last
    return cfg, {"semantic_" + k: v for k, v in mapped.items()}


def vitamin_tower(state: dict[str, torch.Tensor], image_size: int, heads: int | None) -> tuple[dict, dict]:
    """timm's ViTamin (head and fc_norm deleted) -> the ``timm_vitamin`` encoder's config and tensors."""
    out = {
        "semantic_encoder.net." + k[len("encoder_vqkd.") :]: v
        for k, v in state.items()
        if k.startswith("encoder_vqkd.")
    }
    stages = f"{VITAMIN}stages."
    width = state["encoder_vqkd.blocks.0.norm1.weight"].shape[0]
    depth = count_levels(state, r"encoder_vqkd\.blocks\.(\d+)\.")
    stem = state[f"{VITAMIN}stem.conv1.weight"].shape[0]
    dims = [state[f"{stages}{s}.0.conv3_1x1.weight"].shape[0] for s in (0, 1)]
    depths = [count_levels(state, rf"encoder_vqkd\.patch_embed\.backbone\.stages\.{s}\.(\d+)\.") for s in (0, 1)]
    cfg: dict[str, Any] = {"name": "timm_vitamin", "model": "vitamin_xlarge_256", "image_size": image_size}
    if (width, depth, stem, dims, depths) != VITAMIN_XL:
        cfg.update(width=width, depth=depth, heads=heads or VITAMIN_HEADS.get(width, max(width // 64, 1)),
                   stem_width=stem, stage_dims=dims, stage_depths=depths)  # fmt: skip
    return cfg, out
