"""DualToken's tokenizer (songweii/DualToken, ``RQVAESiglipModel``) as vtok's ``dualtoken`` model.

The released file (``epoch_n.pt``) is a dict whose ``state_dict`` holds the model:

- ``siglip_model.vision_model.*``: transformers' ``SiglipVisionTransformer`` -> the ``timm_siglip``
  encoder (``encoder.net.*``): the patch conv, the position table ((L, C) -> (1, L, C)),
  per layer ``layer_norm{1,2}`` -> ``norm{1,2}``, ``self_attn.{q,k,v}_proj`` concatenated into
  ``attn.qkv``, ``out_proj`` -> ``attn.proj``, ``mlp.fc{1,2}``; ``post_layernorm`` -> ``norm``; the
  pooling head (``probe`` -> ``latent``, ``attention.in_proj`` split into ``q`` (first C rows) and
  ``kv``, ``out_proj`` -> ``proj``, ``layernorm`` -> ``norm``, ``mlp``) -> ``attn_pool``.
- ``prequant_{sem,pix,shortcut}.*``, ``postquant_{sem,pix}.*``, ``post_quant_conv.*``, ``decoder.*``:
  vtok's parts carry the published names (``decoder`` is taming's layout, the ``conv`` decoder).
- ``quantizer_{sem,pix}.codebooks.{k}.{weight,cluster_size_ema,embed_ema}``: one shared codebook
  module per quantizer, saved once per depth level: level 0's are used (the others checked equal),
  ``weight``'s last row (the padding row the search never considers) dropped; -> ``quantizer.
  {semantic,pixel}.{codebook,cluster_size_ema,embed_ema}``: ``bottleneck_type: rq_ema`` (the released
  semantic codebook: one EMA update per step from all levels) becomes ``rq_shared_step``, ``rq`` (the
  pixel one: an update per level) ``rq_shared``; both search and look up identically.

Dropped, with the reason: ``siglip_model.text_model.*``, ``logit_scale``, ``logit_bias`` (SigLIP's
text tower and its loss scalars: the tokenizer never runs them); ``*.attn.zero_k_bias`` (a buffer
of zeros: k has no bias, checked zero); ``*.position_ids`` (an index buffer of 0..L-1).

Not in the weights, so from the run's ``config.json`` (``--config``; its ``rqvaesiglip`` part)
or else the released configs' values: the tapped layers (``layer_recon`` 6, ``layer_sem`` 26,
``layer_shortcut`` 4, ``weight_shortcut`` 0.6), the decoder grid (``decoder_latent_shape``;
24x24 at 384 px), the image size (``ddconfig.resolution``; 384 for patch 14, 16 x 16 = 256 for
patch 16), the codebooks' kind (``rq_ema`` semantic, ``rq`` pixel), EMA decay (0.99) and restarts (on); the tower's heads (16 for the
So400m and Large widths, 12 for Base, else width // 64).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vtok.convert.common import count_levels
from vtok.convert.registry import source
from vtok.errors import VtokError

VISION = "siglip_model.vision_model."
DROPPED_PREFIXES = ("siglip_model.text_model.", "siglip_model.logit_scale", "siglip_model.logit_bias")
OWN_NAMES = ("prequant_sem.", "prequant_pix.", "prequant_shortcut.", "postquant_sem.", "postquant_pix.",
             "post_quant_conv.", "decoder.")  # fmt: skip
QUANTIZERS = {"quantizer_sem": "semantic", "quantizer_pix": "pixel"}
HEADS = {1152: 16, 1024: 16, 768: 12}  # SigLIP So400m, Large, Base
SO400M_MLP = 4304  # timm's so400m mlp_ratio 3.7362 gives 4304 at width 1152
PUBLISHED = {"layer_recon": 6, "layer_sem": 26, "layer_shortcut": 4, "weight_shortcut": 0.6}
LAYER_RENAMES = [("layer_norm1.", "norm1."), ("layer_norm2.", "norm2."), ("self_attn.out_proj.", "attn.proj."),
                 ("mlp.", "mlp.")]  # fmt: skip


def _tower(state: dict[str, torch.Tensor], image_size: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """transformers' SigLIP vision tower -> the ``timm_siglip`` encoder's config and ``encoder.net.*`` tensors."""
    out: dict[str, torch.Tensor] = {}
    patch_w = state[f"{VISION}embeddings.patch_embedding.weight"]
    width, patch = patch_w.shape[0], patch_w.shape[-1]
    depth = count_levels(state, rf"{VISION.replace('.', '[.]')}encoder[.]layers[.](\d+)[.]")
    out["encoder.net.patch_embed.proj.weight"] = patch_w
    out["encoder.net.patch_embed.proj.bias"] = state[f"{VISION}embeddings.patch_embedding.bias"]
    out["encoder.net.pos_embed"] = state[f"{VISION}embeddings.position_embedding.weight"][None]
    for i in range(depth):
        src, dst = f"{VISION}encoder.layers.{i}.", f"encoder.net.blocks.{i}."
        for part in ("weight", "bias"):
            qkv = [state[f"{src}self_attn.{n}_proj.{part}"] for n in "qkv"]
            out[f"{dst}attn.qkv.{part}"] = torch.cat(qkv, dim=0)
        for key, value in state.items():
            if key.startswith(src) and "_proj." not in key.replace("out_proj.", ""):
                name = key[len(src) :]
                for a, b in LAYER_RENAMES:
                    if name.startswith(a):
                        out[dst + b + name[len(a) :]] = value
    for part in ("weight", "bias"):
        out[f"encoder.net.norm.{part}"] = state[f"{VISION}post_layernorm.{part}"]
        in_proj = state[f"{VISION}head.attention.in_proj_{part}"]
        out[f"encoder.net.attn_pool.q.{part}"], out[f"encoder.net.attn_pool.kv.{part}"] = (
            in_proj[:width],
            in_proj[width:],
        )
        out[f"encoder.net.attn_pool.proj.{part}"] = state[f"{VISION}head.attention.out_proj.{part}"]
        out[f"encoder.net.attn_pool.norm.{part}"] = state[f"{VISION}head.layernorm.{part}"]
        for fc in ("fc1", "fc2"):
            out[f"encoder.net.attn_pool.mlp.{fc}.{part}"] = state[f"{VISION}head.mlp.{fc}.{part}"]
    out["encoder.net.attn_pool.latent"] = state[f"{VISION}head.probe"]
    mlp = state[f"{VISION}encoder.layers.0.mlp.fc1.weight"].shape[0]
    if mlp != int(width * SO400M_MLP / 1152):
        raise VtokError(
            f"DualToken's SigLIP tower has MLP width {mlp} at width {width}; vtok builds So400m-shaped towers"
        )
    cfg: dict[str, Any] = {"name": "timm_siglip", "model": "vit_so400m_patch14_siglip_384", "image_size": image_size}
    if (width, depth, patch) != (1152, 27, 14):
        cfg.update(width=width, depth=depth, heads=HEADS.get(width, width // 64), patch_size=patch)
    return cfg, out


def _codebook(
    state: dict[str, torch.Tensor], src: str, hps: dict[str, Any], dst: str, default: str
) -> tuple[dict, dict]:
    """One shared-codebook ``RQBottleneck`` (``default``: its published ``bottleneck_type``) -> a config and tensors."""
    depth = count_levels(state, rf"{src}\.codebooks\.(\d+)\.")
    for level in range(1, depth):
        for name in ("weight", "cluster_size_ema", "embed_ema"):
            if not torch.equal(state[f"{src}.codebooks.{level}.{name}"], state[f"{src}.codebooks.0.{name}"]):
                raise VtokError(f"{src} has a codebook per depth ({src}.codebooks.{level}.{name} differs from level "
                                "0's); vtok's rq_shared holds the one shared codebook of the released models")  # fmt: skip
    codes = state[f"{src}.codebooks.0.weight"][:-1]  # the last row is nn.Embedding's padding_idx, never searched
    out = {
        f"quantizer.{dst}.codebook": codes.float().clone(),
        f"quantizer.{dst}.cluster_size_ema": state[f"{src}.codebooks.0.cluster_size_ema"].float(),
        f"quantizer.{dst}.embed_ema": state[f"{src}.codebooks.0.embed_ema"].float(),
    }
    # rq_ema (DualToken's semantic codebook) updates its EMA once per step from all levels; rq (the pixel one) per level.
    name = "rq_shared_step" if hps.get("bottleneck_type", default) == "rq_ema" else "rq_shared"
    cfg = {"name": name, "dim": codes.shape[1], "depth": depth, "codebook_size": codes.shape[0],
           "decay": float(hps.get("decay", 0.99)), "restart_unused_codes": bool(hps.get("restart_unused_codes", True))}  # fmt: skip
    return cfg, out


def _decoder(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``conv`` decoder's config from taming's decoder weights."""
    n = count_levels(state, r"decoder\.up\.(\d+)\.")
    ch = state["decoder.conv_out.weight"].shape[1]  # level 0 has ch * ch_mult[0] channels; DualToken's ch_mult[0] is 1
    mult = [state[f"decoder.up.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(n)]
    return {"name": "conv", "ch": ch, "ch_mult": mult,
            "num_res_blocks": count_levels(state, r"decoder\.up\.0\.block\.(\d+)\.") - 1,
            "attn_levels": [i for i in range(n) if f"decoder.up.{i}.attn.0.q.weight" in state],
            "z_channels": state["decoder.conv_in.weight"].shape[1]}  # fmt: skip


@source(
    "dualtoken",
    "DualToken",
    marker="quantizer_pix.codebooks.0.",
    takes_config=True,
    config_help="its config.json (tapped layers, decoder grid, image size, EMA decay) (optional)",
)
def dualtoken(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    hps = dict((source_cfg or {}).get("rqvaesiglip", source_cfg or {}))
    unknown = sorted(k for k in state if not k.startswith((VISION, *DROPPED_PREFIXES, *OWN_NAMES, *QUANTIZERS)))
    if unknown:
        raise VtokError(f"DualToken checkpoint has tensors no vtok part takes: {', '.join(unknown[:4])}")
    patch = state[f"{VISION}embeddings.patch_embedding.weight"].shape[-1]
    side = math.isqrt(state[f"{VISION}embeddings.position_embedding.weight"].shape[0])
    image_size = int(
        (hps.get("ddconfig") or {}).get("resolution") or (384 if (patch, side) == (14, 27) else side * patch)
    )
    if image_size // patch != side:
        raise VtokError(f"image size {image_size} with patch {patch} is not the position table's {side}x{side} grid")
    encoder, mapped = _tower(state, image_size)
    quantizers = {}
    for src, dst in QUANTIZERS.items():
        vq = hps.get("vq_sem" if dst == "semantic" else "vq_pix") or {}
        if vq.get("shared_codebook") is False:
            raise VtokError("this DualToken config has shared_codebook: false; vtok's rq_shared holds one codebook")
        quantizers[dst], tensors = _codebook(state, src, vq, dst, "rq_ema" if dst == "semantic" else "rq")
        mapped.update(tensors)
    for key, value in state.items():
        if key.startswith(OWN_NAMES):
            if key.endswith(".attn.zero_k_bias"):
                if value.abs().max() != 0:
                    raise VtokError(f"{key} is not zero; DualToken's k projection has no bias")
                continue
            mapped[key] = value
    shortcut = any(k.startswith("prequant_shortcut.") for k in state)
    grid = hps.get("decoder_latent_shape") or ([24, 24] if image_size == 384 else None)
    layer = {k: hps.get(k, PUBLISHED[k]) for k in PUBLISHED}
    cfg = {
        "name": "dualtoken",
        "encoder": encoder,
        "quantizer": {"name": "dual_rvq", **quantizers},
        "decoder": _decoder(state),
        "pixel_layer": int(layer["layer_recon"]),
        "semantic_layer": int(layer["layer_sem"]),
        "shortcut_layer": int(layer["layer_shortcut"]) if shortcut else None,
        "shortcut_weight": float(layer["weight_shortcut"]),
        "decoder_grid": [int(g) for g in grid] if grid else None,
    }
    return cfg, mapped
