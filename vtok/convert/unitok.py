"""UniTok's released tokenizer (FoundationVision/UniTok, ``UniTok`` in ``models/unitok.py``) as a vtok grid tokenizer.

The release (``unitok_tokenizer.pth``) is a training checkpoint, ``{'args', 'trainer':
{'unitok': state dict}}`` (``read_checkpoint`` reads ``trainer.unitok``); the state dict holds:

- ``encoder.*``: timm's ViTamin (``patch_embed.backbone.{stem,stages,pool}``, ``blocks``, ``norm``)
  -> the ``unitok`` encoder's ``tower`` (names kept). ``encoder.pos_embed`` is dropped: UniTok
  replaces the tower's position table by a constant (1, 1, width) zero tensor without gradient,
  so adding it changes nothing;
- ``quant_proj.*`` -> the encoder's ``proj`` and ``post_quant_proj.*`` -> the decoder's ``proj``
  (UniTok's attention projection, names kept); their ``attn.zero_k_bias`` is a constant zero
  buffer (the k bias UniTok never trains), which vtok's ``WidthAttention`` writes as zeros;
- ``quantizer.codebooks.{c}.codebook.weight`` (K x d, raw; normalised on use) -> row c of ``mcq``'s
  ``codes`` (C x K x d); ``quantizer.codebooks.{c}.vocab_usage`` (a usage average for logging) dropped;
- ``decoder.*``: ``blocks``, ``norm`` and the upsampler ``up_conv1..4`` -> the ``unitok`` decoder (names kept);
- ``text_encoder.*``, ``fc_norm.*``, ``projection.*``, ``logit_scale``: the CLIP text tower and
  image head, dropped: they serve the text-alignment loss in training and zero-shot
  evaluation (``encode_image``), not tokenizing or decoding.

UniTok's attention projections mix tokens, so they live in the encoder and decoder parts,
and the grid tokenizer's 1x1 ``quant_conv`` / ``post_quant_conv`` are identities (exact in
floating point). UniTok's ids ``(B, codebooks, L)`` are vtok's ``(B, L, codebooks)`` transposed.

The weights fix every width and depth; not the head counts: the ViT's are width / 64
(every ViTamin size), the projections' width / code width (``models/unitok.py``). The image
size (``img_size``, default 256) comes from ``--config`` (UniTok's ``args``, YAML or JSON).
Register tokens (``num_query`` > 0) are refused.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.convert.common import count_levels
from vtok.convert.registry import source
from vtok.errors import VtokError

DROPPED = ("text_encoder.", "fc_norm.", "projection.", "logit_scale", "encoder.pos_embed")
HEAD_WIDTH = 64  # every ViTamin tower's attention head width (small 384/6, base 768/12, large 1024/16)


def _encoder(state: dict[str, torch.Tensor], img_size: int) -> dict[str, Any]:
    """The ``unitok`` encoder config from the tower's and the projection's weights."""
    stem = "encoder.patch_embed.backbone."
    dims = [state[f"{stem}stages.{s}.0.conv3_1x1.weight"].shape[0] for s in (0, 1)]
    width = state["encoder.norm.weight"].shape[0]
    return {
        "name": "unitok",
        "img_size": img_size,
        "stem_width": state[f"{stem}stem.conv1.weight"].shape[0],
        "stage_dims": [*dims, width],
        "stage_depths": [count_levels(state, rf"{stem}stages\.{s}\.(\d+)\.") for s in (0, 1)],
        "depth": count_levels(state, r"encoder\.blocks\.(\d+)\."),
        "num_heads": width // HEAD_WIDTH,
        "z_channels": state["quant_proj.proj.weight"].shape[0],
    }


def _decoder(state: dict[str, torch.Tensor], z: int) -> dict[str, Any]:
    """The ``unitok`` decoder config from its weights."""
    width = state["decoder.norm.weight"].shape[0]
    return {
        "name": "unitok",
        "in_channels": z,
        "width": width,
        "depth": count_levels(state, r"decoder\.blocks\.(\d+)\."),
        "num_heads": width // HEAD_WIDTH,
        "up_dims": [
            state["decoder.up_conv1.conv.weight"].shape[0],
            state["decoder.up_conv3.0.conv3_1x1.weight"].shape[0],
        ],
        "up_depths": [count_levels(state, rf"decoder\.up_conv{i}\.(\d+)\.") for i in (2, 3)],
    }


def _identity(channels: int) -> dict[str, torch.Tensor]:
    """A 1x1 convolution's weight and bias computing the identity on ``channels``."""
    return {"weight": torch.eye(channels)[..., None, None], "bias": torch.zeros(channels)}


@source(
    "unitok",
    "UniTok",
    marker="post_quant_proj.attn.",
    contains=("rq-vae",),  # RQ-VAE's marker quantizer.codebooks. is a prefix of UniTok's codebooks
    takes_config=True,
    config_help="img_size (optional; its training args)",
    default_config={"img_size": 256},
    entries=("trainer.unitok",),  # its release: {'args', 'epoch', 'iter', 'trainer': {'unitok': state dict}}
)
def unitok(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    cfg = source_cfg or {}
    cfg = cfg.get("args", cfg) if isinstance(cfg.get("args"), dict) else cfg
    if "encoder.reg_token" in state or int(cfg.get("num_query", 0) or 0):
        raise VtokError("UniTok checkpoints with register tokens (num_query > 0) are not supported")
    if "quant_proj.attn.qkv.weight" not in state:
        raise VtokError("only UniTok's attention projection (quant_proj 'attn') is supported, not 'linear'")
    encoder = _encoder(state, int(cfg.get("img_size", 256)))
    z = encoder["z_channels"]
    n = count_levels(state, r"quantizer\.codebooks\.(\d+)\.")
    codes = torch.stack([state[f"quantizer.codebooks.{c}.codebook.weight"] for c in range(n)])  # (C, K, d)
    if codes.shape[0] * codes.shape[2] != z:
        raise VtokError(f"UniTok's {n} codebooks of width {codes.shape[2]} do not make its code width {z}")
    quantizer = {"name": "mcq", "dim": z, "codebooks": n, "codebook_size": codes.shape[1],
                 "beta": float(cfg.get("vq_beta", 0.25))}  # fmt: skip
    decoder = _decoder(state, z)

    mapped: dict[str, torch.Tensor] = {"quantizer.codes": codes}
    used = {f"quantizer.codebooks.{c}.{k}" for c in range(n) for k in ("codebook.weight", "vocab_usage")}
    for key, value in state.items():
        if key in used or key.startswith(DROPPED) or key.endswith("attn.zero_k_bias"):
            continue
        if key.startswith("encoder."):
            mapped["encoder.tower." + key.removeprefix("encoder.")] = value
        elif key.startswith("quant_proj."):
            mapped["encoder.proj." + key.removeprefix("quant_proj.")] = value
        elif key.startswith("post_quant_proj."):
            mapped["decoder.proj." + key.removeprefix("post_quant_proj.")] = value
        elif key.startswith("decoder."):
            mapped[key] = value
        else:
            raise VtokError(f"unexpected key {key!r} in a UniTok checkpoint")
    for name, value in _identity(z).items():
        mapped[f"quant_conv.{name}"], mapped[f"post_quant_conv.{name}"] = value, value.clone()
    return {"name": "grid", "encoder": encoder, "quantizer": quantizer, "decoder": decoder}, mapped
