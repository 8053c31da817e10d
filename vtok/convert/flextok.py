"""FlexTok's released tokenizers (apple/ml-flextok, ``FlexTok`` in ``flextok/flextok_wrapper.py``) as vtok's ``oned``
model with the ``flextok`` encoder, ``fsq`` and the ``flextok_flow`` decoder.

The released ``model.safetensors`` (EPFL-VILAB/flextok_d12_d12_in1k, _d18_d18_in1k, _d18_d28_in1k, _d18_d28_dfn)
holds the hydra config in its metadata and beside it as ``config.json`` (``--config``); its tensors:

- ``vae.vae.{encoder,quant_conv}.*`` -> ``encoder.{vae_encoder,quant_conv}.*`` and
  ``vae.vae.{decoder,post_quant_conv}.*`` -> ``decoder.{vae_decoder,post_quant_conv}.*`` (diffusers'
  AutoencoderKL halves, names kept);
- ``encoder.module_dict.``: ``enc_patch_emb.patch_proj`` -> ``encoder.patch_in``, ``enc_posemb_module.posembs``
  (the fixed sin-cos table) -> ``encoder.patch_pos``, ``enc_register_module.registers`` -> ``encoder.registers``,
  ``enc_transformer.blocks.*`` -> ``encoder.blocks.*`` (names kept), ``enc_to_latents.proj`` -> ``to_code``;
- ``decoder.module_dict.``: ``dec_from_latents.proj`` -> ``from_code``, ``dec_registers_posemb_module.posembs``
  (1, 1, D, N) -> ``decoder.latent_pos`` (1, N, D), ``dec_nested_dropout.dropout_mask_token`` ->
  ``decoder.mask_token``, ``dec_latent_dropout.nullcond`` -> ``decoder.null_token``,
  ``dec_noise_patch_emb.patch_proj`` -> ``decoder.patch_in``, ``dec_patches_posemb_module.posembs`` ->
  ``decoder.patch_pos``, ``dec_time_embedder.mlp.{0,2}`` -> ``decoder.time_embed.{0,2}``,
  ``dec_transformer.blocks.*`` -> ``decoder.blocks.*``, ``dec_to_patches.adaLN_modulation.1`` ->
  ``decoder.out_modulation.1``, ``dec_to_patches.proj`` -> ``decoder.out_proj``.

Nothing is dropped; ``_checkpoint_wrapped_module.`` (activation checkpointing) is stripped where a file has it.
The weights fix the widths, depths, patch sizes, register count, table sizes and modulation sets; the config
gives what they cannot: FSQ levels (``regularizer.levels``), the VAE's ``scaling_factor`` and norm groups, the
heads' width (``head_dim``, FlexTok's default 64), ``max_timestep`` of the time embedding and whether the null
condition is a single token. The image size is the largest the position tables cover (256 px for the released
models). Sampling follows the README's example (20 Euler steps, APG guidance 7.5, seed 0); override
``model.decoder.steps`` / ``guidance_scale`` / ``norm_guidance`` / ``seed`` after converting.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from einops import rearrange

from vtok.convert.common import count_levels
from vtok.convert.registry import source
from vtok.errors import VtokError

ENC, DEC = "encoder.module_dict.", "decoder.module_dict."
RULES = [
    ("vae.vae.encoder.", "encoder.vae_encoder."),
    ("vae.vae.quant_conv.", "encoder.quant_conv."),
    ("vae.vae.decoder.", "decoder.vae_decoder."),
    ("vae.vae.post_quant_conv.", "decoder.post_quant_conv."),
    (ENC + "enc_patch_emb.patch_proj.", "encoder.patch_in."),
    (ENC + "enc_posemb_module.posembs", "encoder.patch_pos"),
    (ENC + "enc_register_module.registers", "encoder.registers"),
    (ENC + "enc_transformer.blocks.", "encoder.blocks."),
    (ENC + "enc_to_latents.proj.", "to_code."),
    (DEC + "dec_from_latents.proj.", "from_code."),
    (DEC + "dec_nested_dropout.dropout_mask_token", "decoder.mask_token"),
    (DEC + "dec_latent_dropout.nullcond", "decoder.null_token"),
    (DEC + "dec_noise_patch_emb.patch_proj.", "decoder.patch_in."),
    (DEC + "dec_patches_posemb_module.posembs", "decoder.patch_pos"),
    (DEC + "dec_time_embedder.mlp.", "decoder.time_embed."),
    (DEC + "dec_transformer.blocks.", "decoder.blocks."),
    (DEC + "dec_to_patches.adaLN_modulation.", "decoder.out_modulation."),
    (DEC + "dec_to_patches.proj.", "decoder.out_proj."),
]
REGISTER_POS = DEC + "dec_registers_posemb_module.posembs"


def _module(config: dict, part: str, name: str) -> dict:
    """The hydra kwargs of module ``name`` of ``part`` (encoder / decoder), {} when the config lacks it."""
    return dict(config.get(part, {}).get("module_dict", {}).get(name, {}) or {})


def _vae(state: dict[str, torch.Tensor], config: dict) -> dict[str, Any]:
    """The VAE's shape from its weights; scaling factor and norm groups from the config."""
    vae_cfg = dict(config.get("vae", {}) or {})
    scaling = vae_cfg.get("scaling_factor")
    if scaling is None:
        where = f"the config.json of {vae_cfg['hf_hub_path']}" if vae_cfg.get("hf_hub_path") else "its config.json"
        raise VtokError(f"flextok: the config gives no vae.scaling_factor: add the VAE's ({where} states it)")
    levels = count_levels(state, r"vae\.vae\.encoder\.down_blocks\.(\d+)\.")
    channels = [state[f"vae.vae.encoder.down_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(levels)]
    return {
        "latent_channels": state["vae.vae.quant_conv.weight"].shape[0] // 2,
        "block_out_channels": channels,
        "layers_per_block": count_levels(state, r"vae\.vae\.encoder\.down_blocks\.0\.resnets\.(\d+)\."),
        "norm_num_groups": int(vae_cfg.get("norm_num_groups", 32)),
        "scaling_factor": float(scaling),
    }


def _trunk(state: dict[str, torch.Tensor], prefix: str, config: dict, part: str, name: str) -> dict[str, Any]:
    """width, depth, head_dim, mlp_ratio of a FlexTransformer from its weights (head_dim from the config)."""
    width = state[f"{prefix}blocks.0.attn.wq.weight"].shape[0]
    hidden = state[f"{prefix}blocks.0.mlp.fc1.weight"].shape[0]
    trunk = _module(config, part, name)
    ratio = float(trunk.get("mlp_ratio", 4.0))
    if int(2 * int(width * ratio) / 3) != hidden:
        raise VtokError(f"flextok: {name}'s MLP width {hidden} does not follow mlp_ratio {ratio} at width {width}")
    head_dim = int(trunk.get("head_dim", 64))
    if width % head_dim:
        raise VtokError(f"flextok: {name} width {width} does not split into heads of {head_dim}")
    return {
        "width": width,
        "depth": count_levels(state, re.escape(prefix) + r"blocks\.(\d+)\."),
        "head_dim": head_dim,
        "mlp_ratio": ratio,
    }


def _patch(state: dict[str, torch.Tensor], key: str, channels: int) -> int:
    side = math.isqrt(state[key].shape[1] // channels)
    if side * side * channels != state[key].shape[1]:
        raise VtokError(f"flextok: {key} reads {state[key].shape[1]} features, not square patches of {channels}")
    return side


@source(
    "flextok",
    "FlexTok",
    marker=ENC + "enc_register_module.",
    takes_config=True,
    config_help="its config.json (the hydra config FlexTokFromHub was built from)",
)
def flextok(state: dict[str, torch.Tensor], source_config: dict | None = None) -> tuple[dict, dict]:
    """FlexTok's state -> (vtok ``oned`` config, state); see the module docstring for the mapping."""
    config = dict(source_config or {})
    config = dict(config.get("config", config))  # a Hub config.json may wrap the hydra config
    state = {k.replace("_checkpoint_wrapped_module.", ""): v for k, v in state.items()}
    vae = _vae(state, config)
    c = vae["latent_channels"]
    enc = _trunk(state, ENC + "enc_transformer.", config, "encoder", "enc_transformer")
    dec = _trunk(state, DEC + "dec_transformer.", config, "decoder", "dec_transformer")
    p_enc = _patch(state, ENC + "enc_patch_emb.patch_proj.weight", c)
    p_dec = _patch(state, DEC + "dec_noise_patch_emb.patch_proj.weight", c)
    grid = state[ENC + "enc_posemb_module.posembs"].shape[-1]
    image_size = grid * p_enc * 2 ** (len(vae["block_out_channels"]) - 1)
    tokens = state[ENC + "enc_register_module.registers"].shape[0]
    levels = list(dict(config.get("regularizer", {}) or {}).get("levels", [8, 8, 8, 5, 5, 5]))
    if len(levels) != state[ENC + "enc_to_latents.proj.weight"].shape[0]:
        raise VtokError(f"flextok: FSQ levels {levels} do not fit enc_to_latents' {len(levels)}-wide output")
    register_pos = state[REGISTER_POS]
    if register_pos.ndim != 4 or register_pos.shape[:2] != (1, 1) or register_pos.shape[-1] != tokens:
        raise VtokError(f"flextok: register positions {tuple(register_pos.shape)} are not a learned 1D table")
    sets = state[DEC + "dec_transformer.blocks.0.adaLN_modulation.1.weight"].shape[0] // (6 * dec["width"])
    time = _module(config, "decoder", "dec_time_embedder")
    null = _module(config, "decoder", "dec_latent_dropout")
    common = {"image_size": image_size, "num_latent_tokens": tokens, **vae}
    cfg = {
        "name": "oned",
        "encoder": {"name": "flextok", **common, **enc, "patch_size": p_enc, "pos_grid": grid},
        "quantizer": {"name": "fsq", "dim": len(levels), "levels": levels},
        "decoder": {
            "name": "flextok_flow", **common, **dec, "patch_size": p_dec,
            "pos_grid": state[DEC + "dec_patches_posemb_module.posembs"].shape[-1],
            "time_features": state[DEC + "dec_time_embedder.mlp.0.weight"].shape[1],
            "max_timestep": float(time.get("max_timestep", 1000.0)), "modulation_sets": sets,
            "null_single_token": bool(null.get("replace_with_single_token", False)),
            "steps": 20, "guidance_scale": 7.5, "norm_guidance": True, "seed": 0,
        },
        "ordering": {"name": "nested_dropout"},
    }  # fmt: skip
    mapped = {"decoder.latent_pos": rearrange(register_pos, "1 1 d n -> 1 n d").contiguous()}
    for key, value in state.items():
        if key == REGISTER_POS:
            continue
        for old, new in RULES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        mapped[key] = value
    return cfg, mapped
