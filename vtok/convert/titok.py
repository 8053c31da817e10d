"""TiTok and One-D-Piece checkpoints as vtok 1D tokenizers (``oned`` with ``vit1d`` parts).

Source layout (from the published code): ``latent_tokens``;
``encoder.{patch_embed, class_embedding, positional_embedding,
latent_token_positional_embedding, ln_pre, transformer.{i}.{ln_1, attn.in_proj_*,
attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_post, conv_out}``;
``quantize.embedding.weight`` (l2-normalised at lookup); the decoder's matching keys
plus ``decoder_embed`` and ``mask_token``; and a head: stage-2 weights carry
``decoder.ffn`` to MaskGIT-VQGAN logits, ``pixel_quantize`` and ``pixel_decoder.*``;
the direct-RGB decoder carries ``decoder.ffn.0`` and ``decoder.conv_out``.

What vtok's parts need beyond renaming, each exact in float arithmetic:

- TiTok reads images in [0, 1] and writes them in [0, 1]; vtok's contract is
  [-1, 1]. The affine maps are folded into the patch embedding (w/2, b + sum(w)/2)
  and the last conv (2w, 2b - 1).
- Class and mask tokens are stored as parameters plus their positional embeddings;
  vtok stores the sums (``cls_token``, ``patch_queries``).
- The CLIP-style blocks (``nn.MultiheadAttention``) and timm's ``Block`` compute the
  same function: ``in_proj`` is timm's ``qkv``, ``out_proj`` its ``proj``.
- Stage-2 TiTok reads latents through a reshape (``legacy_reshape``), and decodes a
  prefix as a shorter sequence (``prefix_only``), as One-D-Piece does.

Heads are not in the weights; they follow TiTok's sizes by width, or the
``vit_enc_model_size`` / ``vit_dec_model_size`` of the source's config file.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from vtok.convert.common import count_levels, rename, vq_codebook
from vtok.convert.registry import source
from vtok.errors import VtokError

TITOK_HEADS = {512: 8, 768: 12, 1024: 16}  # small, base, large
TITOK_SIZES = {"small": 512, "base": 768, "large": 1024}


def _heads(width: int, size: str | None, where: str) -> int:
    if size is not None:
        if not isinstance(size, str) or size not in TITOK_SIZES:
            raise VtokError(f"{where}: model size {size!r} is not one of {', '.join(TITOK_SIZES)}")
        width = TITOK_SIZES[size]
    if width not in TITOK_HEADS:
        raise VtokError(
            f"{where}: width {width} is not one of TiTok's sizes ({sorted(TITOK_HEADS)}); its head count is "
            "not in the weights, pass the source config (--config)"
        )
    return TITOK_HEADS[width]


def _grid(pos: torch.Tensor, where: str) -> int:
    grid = math.isqrt(pos.shape[0] - 1)
    if grid * grid != pos.shape[0] - 1:
        raise VtokError(f"{where}.positional_embedding has {pos.shape[0]} rows, not 1 + a square")
    return grid


def _vit(
    state: dict[str, torch.Tensor], part: str, size: str | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.Tensor]:
    """The ViT shape of one side ('encoder' or 'decoder'), its class and latent tensors, and its positions."""
    pos = state.pop(f"{part}.positional_embedding")
    cls = state.pop(f"{part}.class_embedding")
    latent_pos = state.pop(f"{part}.latent_token_positional_embedding")
    width = pos.shape[1]
    depth = count_levels(state, rf"{part}\.transformer\.(\d+)\.")
    mlp = state[f"{part}.transformer.0.mlp.c_fc.weight"].shape[0]
    shape = {"width": width, "depth": depth, "heads": _heads(width, size, part), "mlp_ratio": mlp / width,
             "num_latent_tokens": latent_pos.shape[0], "class_token": True}  # fmt: skip
    tensors = {
        f"{part}.cls_token": (cls + pos[:1])[None],
        f"{part}.latent_pos": latent_pos[None],
    }
    return shape, tensors, pos


BLOCK_RULES = [(".ln_1.", ".norm1."), (".ln_2.", ".norm2."), (".attn.in_proj_weight", ".attn.qkv.weight"),
               (".attn.in_proj_bias", ".attn.qkv.bias"), (".attn.out_proj.", ".attn.proj."),
               (".mlp.c_fc.", ".mlp.fc1."), (".mlp.c_proj.", ".mlp.fc2.")]  # fmt: skip


@source(
    "titok", "TiTok", marker="encoder.patch_embed.", takes_config=True, config_help="the source's YAML or config.json"
)
def titok(
    state: dict[str, torch.Tensor], source_config: dict[str, Any] | None = None, ordering: str = "none"
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(vtok config, vtok state dict) of a TiTok checkpoint; ``ordering`` is the training rule to carry on with."""
    state = dict(state)
    model_cfg = (source_config or {}).get("model")
    vq_cfg = model_cfg.get("vq_model") if isinstance(model_cfg, dict) else None
    vq_cfg = vq_cfg if isinstance(vq_cfg, dict) else {}  # TiTok's config: model.vq_model.vit_{enc,dec}_model_size
    mapped: dict[str, torch.Tensor] = {}

    # Encoder: [0, 1] input folded into the patch embedding.
    w, b = state.pop("encoder.patch_embed.weight"), state.pop("encoder.patch_embed.bias")
    patch = w.shape[-1]
    enc, tensors, pos = _vit(state, "encoder", vq_cfg.get("vit_enc_model_size"))
    grid = _grid(pos, "encoder")
    mapped |= tensors
    mapped["encoder.pos_embed"] = pos[None, 1:]
    mapped["encoder.patch_embed.weight"] = w / 2
    mapped["encoder.patch_embed.bias"] = b + w.sum(dim=(1, 2, 3)) / 2
    mapped["encoder.latent_tokens"] = state.pop("latent_tokens")[None]
    conv_out = state.pop("encoder.conv_out.weight")
    mapped["to_code.weight"] = conv_out[:, :, 0, 0]
    mapped["to_code.bias"] = state.pop("encoder.conv_out.bias")

    codes = state.pop("quantize.embedding.weight")
    mapped |= vq_codebook(F.normalize(codes.float(), dim=-1))

    # Decoder: class and mask tokens with their positions summed; the head by what the weights carry.
    dec, tensors, dpos = _vit(state, "decoder", vq_cfg.get("vit_dec_model_size"))
    dgrid = _grid(dpos, "decoder")
    mapped |= tensors
    mask = state.pop("decoder.mask_token")
    mapped["decoder.patch_queries"] = (mask.reshape(1, 1, -1) + dpos[None, 1:]).contiguous()
    mapped["decoder.mask_token"] = mask.reshape(-1)
    mapped["from_code.weight"] = state.pop("decoder.decoder_embed.weight")
    mapped["from_code.bias"] = state.pop("decoder.decoder_embed.bias")
    head, dpatch, last, legacy = _pixel_head(state, mapped, dec["width"])
    rules = [("decoder.ffn.", "decoder.pixel_head.ffn."), ("decoder.conv_out.", "decoder.pixel_head.conv_out."),
             ("pixel_decoder.", "decoder.pixel_head.decoder."), ("encoder.transformer.", "encoder.blocks."),
             ("decoder.transformer.", "decoder.blocks."), ("encoder.ln_pre.", "encoder.norm_pre."),
             ("encoder.ln_post.", "encoder.norm."), ("decoder.ln_pre.", "decoder.norm_pre."),
             ("decoder.ln_post.", "decoder.norm.")]  # fmt: skip
    for key, value in state.items():
        mapped[rename(rename(key, rules), BLOCK_RULES)] = value
    # [0, 1] output folded into the last conv.
    mapped[f"{last}.weight"] = mapped[f"{last}.weight"] * 2
    mapped[f"{last}.bias"] = mapped[f"{last}.bias"] * 2 - 1

    size, dsize = grid * patch, dgrid * dpatch
    if size != dsize:
        raise VtokError(f"encoder reads {size}px images but the decoder writes {dsize}px")
    cfg = {
        "name": "oned",
        "encoder": {"name": "vit1d", "image_size": size, "patch_size": patch, **enc, "legacy_reshape": legacy},
        "quantizer": {
            "name": "vq",
            "dim": codes.shape[1],
            "codebook_size": codes.shape[0],
            "cosine": True,
            "ema": True,
            "kmeans_init": False,
            "dead_code_share": 0.0,
        },
        "decoder": {
            "name": "vit1d",
            "image_size": size,
            "patch_size": dpatch,
            **dec,
            "prefix_only": True,
            "pixel_head": head,
        },  # fmt: skip
        "ordering": {"name": ordering},
    }
    return cfg, mapped


def _pixel_head(
    state: dict[str, torch.Tensor], mapped: dict[str, torch.Tensor], width: int
) -> tuple[dict[str, Any], int, str, bool]:
    """The decoder's pixel head by what the weights carry: (head config, decoder patch, last conv, legacy reshape).

    Moves the head tensors that need more than renaming from ``state`` into ``mapped``.
    """
    if "pixel_decoder.conv_in.weight" in state:
        head = _maskgit_head(state, width)
        mapped["decoder.pixel_head.codebook"] = state.pop("pixel_quantize.embedding.weight")
        dpatch, last, legacy = 2 ** (len(head["channels"]) - 1), "decoder.pixel_head.decoder.conv_out", True
    elif "decoder.conv_out.weight" in state:
        dpatch = math.isqrt(state["decoder.ffn.0.weight"].shape[0] // 3)
        head = {"name": "patch_conv", "width": width, "patch_size": dpatch}
        mapped["decoder.pixel_head.ffn.weight"] = state.pop("decoder.ffn.0.weight")
        mapped["decoder.pixel_head.ffn.bias"] = state.pop("decoder.ffn.0.bias")
        last, legacy = "decoder.pixel_head.conv_out", False
    else:
        raise VtokError(
            "a stage-1 TiTok checkpoint (decoder.ffn to proxy codes, no pixel_decoder) decodes only through the "
            "separate MaskGIT-VQGAN; convert the stage-2 (decoder-finetuned) checkpoint instead"
        )
    return head, dpatch, last, legacy


def _maskgit_head(state: dict[str, torch.Tensor], width: int) -> dict[str, Any]:
    levels = count_levels(state, r"pixel_decoder\.up\.(\d+)\.")
    codebook = state["pixel_quantize.embedding.weight"]
    return {
        "name": "maskgit_vqgan",
        "width": width,
        "hidden": state["decoder.ffn.0.weight"].shape[0],
        "codebook_size": codebook.shape[0],
        "code_dim": codebook.shape[1],
        "channels": [state[f"pixel_decoder.up.{i}.block.0.conv1.weight"].shape[0] for i in range(levels)],
        "num_res_blocks": count_levels(state, r"pixel_decoder\.up\.0\.block\.(\d+)\."),
    }


@source(
    "one-d-piece",
    "One-D-Piece",
    marker="encoder.patch_embed.",
    takes_config=True,
    config_help="the source's YAML or config.json",
)
def one_d_piece(
    state: dict[str, torch.Tensor], source_config: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """One-D-Piece: TiTok's layout, trained with tail token drop, so any prefix decodes."""
    return titok(state, source_config, ordering="tail_drop")
