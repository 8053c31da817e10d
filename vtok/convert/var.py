"""VAR's multi-scale VQVAE (``vae_ch160v4096z32.pth``) as a vtok grid tokenizer with the ``msvq`` quantizer.

The CNN has taming's key layout (``encoder.down.{i}.block/attn``, ``mid.block_1/attn_1/block_2``,
``decoder.up.{i}``, attention at the lowest resolution), except that attention is one fused
``qkv`` 1x1 convolution (split here into vtok's ``q``, ``k``, ``v``). ``quant_conv`` and
``post_quant_conv`` are 3x3. The quantizer holds ``quantize.embedding.weight`` (4096 x 32)
and the phi convolutions: ``quantize.quant_resi.qresi_ls.{k}`` (partially shared, the
released 4), ``quantize.quant_resi.qresi`` (one shared) or ``quantize.quant_resi.{k}`` (one
a scale). VAR's usage counter ``quantize.ema_vocab_hit_SV`` is dropped.

Not in the weights, so VAR's published defaults: the phi ratio 0.5, Euclidean code
search, and the scales 1, 2, 3, 4, 5, 6, 8, 10, 13, 16 (a 16x16 latent grid: 256 px images).
Other scales (VAR's 512 px models use 1, 2, 3, 4, 6, 9, 13, 18, 24, 32) come from a
config file (``--config``, YAML or JSON) with ``v_patch_nums`` (or ``patch_nums``).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from vtok.convert.registry import source
from vtok.convert.vqgan import _cnn_config, _grid_config

VAR_SCALES = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
PHI_RATIO = 0.5
PHI = re.compile(r"quantize\.quant_resi\.(?:qresi_ls\.(\d+)|qresi|(\d+))\.(weight|bias)$")


@source(
    "var-vqvae",
    "VAR",
    marker="quantize.ema_vocab_hit_SV",
    contains=("taming-vqgan",),  # taming's CNN layout
    takes_config=True,
    config_help="v_patch_nums",
    default_config={"v_patch_nums": VAR_SCALES},
)
def var_vqvae(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    source_cfg = source_cfg or {}
    scales = source_cfg.get("v_patch_nums") or source_cfg.get("patch_nums") or VAR_SCALES
    state = {k: v for k, v in state.items() if k != "quantize.ema_vocab_hit_SV"}
    enc = _cnn_config(state, "encoder", "down", "block")
    mapped: dict[str, torch.Tensor] = {}
    phis: set[int] = set()
    for key, value in state.items():
        phi = PHI.match(key)
        if ".qkv." in key:  # (3C, C, 1, 1) = [q; k; v]
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                mapped[key.replace(".qkv.", f".{name}.")] = part
        elif phi:
            index = int(phi.group(1) or phi.group(2) or 0)
            phis.add(index)
            mapped[f"quantizer.phi.{index}.{phi.group(3)}"] = value
        elif key == "quantize.embedding.weight":
            mapped["quantizer.embedding.weight"] = value
        else:
            mapped[key] = value
    codes = state["quantize.embedding.weight"]
    quantizer = {
        "name": "msvq",
        "dim": codes.shape[1],
        "codebook_size": codes.shape[0],
        "scales": [int(p) for p in scales],
        "phi_count": max(1, len(phis)),
        "phi_ratio": PHI_RATIO if phis else 0.0,
    }
    cfg = _grid_config(enc, quantizer, mapped)
    cfg["quant_conv_kernel"] = state["quant_conv.weight"].shape[-1]
    return cfg, mapped
