"""Test-size configs of every registered part, for the registry-wide tests (tests/test_registry.py).

:data:`TINY_KIND` shrinks the fields a whole kind shares; :data:`TINY` the fields of one part where the
kind's are not enough. A new part larger than :data:`MAX_PARAMS` at its defaults needs an entry here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import vtok
from vtok import registry

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def preset_part(preset: str, section: str | None = None) -> dict[str, Any]:
    """A tiny preset's model section (or one part of it) without its name: parts whose tiny preset already
    says their test size (every tiny preset is at 32 px, :data:`SIZE`)."""
    model = vtok.load_config(ROOT / "configs" / "tokenizer" / f"{preset}.yaml")["model"]
    part = model if section is None else model[section]
    return {k: v for k, v in part.items() if k != "name"}


MAX_PARAMS = 2_000_000
SIZE = 32  # test images: (2, 3, 32, 32) in [-1, 1]
CONV = {
    "ch": 32,
    "ch_mult": [1, 1, 2],
    "num_res_blocks": 1,
    "attn_levels": [-1],
    "z_channels": 32,
}  # 32: GroupNorm(32) on it
VIT = {"image_size": SIZE, "patch_size": 8, "width": 32, "depth": 1, "heads": 2, "num_latent_tokens": 8}
PATCH = {"patch_size": 4, "width": 32, "num_blocks": 1, "z_channels": 16}

# Fields shrunk for every part of a kind that has them.
TINY_KIND: dict[str, dict[str, Any]] = {
    "quantizer": {"dim": 8, "codebook_size": 32, "depth": 2, "scales": [1, 2, 4, 8], "kmeans_init": False},
    "pixel_head": {"width": 32},
    "discriminator": {"ndf": 8, "n_layers": 2},
    "teacher": {"stage": 2},
    "halting": {"in_channels": 16, "width": 16, "heads": 2, "lengths_per_image": 4},
}
# Per part, where the kind's fields are not enough.
TINY: dict[tuple[str, str], dict[str, Any]] = {
    ("encoder", "conv"): CONV,
    ("decoder", "conv"): CONV,
    ("encoder", "magvit2"): {"ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "z_channels": 8},
    ("decoder", "magvit2"): {"ch": 32, "ch_mult": [1, 1, 2], "num_res_blocks": 1, "z_channels": 8},
    ("encoder", "patch"): PATCH,
    ("decoder", "patch"): {**PATCH, "refine_blocks": 1, "refine_width": 32},
    ("encoder", "patch1d"): {**PATCH, "image_size": SIZE, "num_latent_tokens": 8, "token_width": 16},
    ("decoder", "patch1d"): {**PATCH, "image_size": SIZE, "num_latent_tokens": 8, "token_width": 16},
    ("encoder", "vit1d"): VIT,
    ("decoder", "vit1d"): VIT,
    ("decoder", "flow1d"): {**VIT, "steps": 2},
    ("quantizer", "fsq"): {"dim": 3, "levels": [5, 4, 4]},
    ("quantizer", "residual_fsq"): {"dim": 4, "levels": [5, 4]},
    ("quantizer", "lfq"): {"dim": 6, "bits": 6, "groups": 2},
    ("quantizer", "bsq"): {"dim": 6, "bits": 6, "groups": 2},
    ("quantizer", "residual_lfq"): {"dim": 4, "bits": 4},
    ("quantizer", "tokenflow"): {"semantic_dim": 8, "pixel_dim": 4},
    ("encoder", "flextok"): preset_part("oned_flextok_tiny", "encoder"),
    ("decoder", "flextok_flow"): preset_part("oned_flextok_tiny", "decoder"),
    ("encoder", "gigatok"): preset_part("vq_gigatok_tiny", "encoder"),
    ("decoder", "gigatok"): preset_part("vq_gigatok_tiny", "decoder"),
    ("encoder", "gigatok2d"): preset_part("vq_gigatok_2d_tiny", "encoder"),
    ("decoder", "gigatok2d"): preset_part("vq_gigatok_2d_tiny", "decoder"),
    ("encoder", "unitok"): preset_part("vq_unitok_tiny", "encoder"),
    ("decoder", "unitok"): preset_part("vq_unitok_tiny", "decoder"),
    ("encoder", "timm_siglip"): preset_part("dual_dualtoken_siglip_tiny", "encoder"),
    ("encoder", "siglip_layer"): preset_part("dual_tokenflow_siglip_tiny", "semantic_encoder"),
    ("encoder", "timm_vitamin"): preset_part("dual_tokenflow_vitamin_tiny", "semantic_encoder"),
    ("model", "dualtoken"): preset_part("dual_dualtoken_siglip_tiny"),
    ("quantizer", "tokenflow_learned"): {"semantic_dim": 8, "pixel_dim": 4},
    ("encoder", "open_clip"): {"image_size": SIZE, "width": 64, "layers": 1, "patch_size": 4},
    ("semantic_decoder", "vit"): {"in_channels": 8, "width": 48, "depth": 1, "grid": 8},
    # Trains only with a teacher: EfficientNet-Lite0 (offline; its stage 2 has 40 channels) stands in for CLIP.
    ("model", "tokenflow"): {
        "teacher": {"name": "effnet_lite0"},
        "semantic_decoder": {"name": "vit", "out_channels": 40},
    },
    ("pixel_head", "maskgit_vqgan"): {"hidden": 32, "codebook_size": 16, "code_dim": 8, "channels": [32, 32, 32, 32]},
    ("pixel_head", "patch_conv"): {"patch_size": 8},
    ("model", "dual"): {"adapter_width": 32, "adapter_blocks": 1},
    ("model", "gpt"): {"codebook_sizes": [16], "grid": [4, 4], "num_classes": 4, "dim": 32, "depth": 1, "heads": 4},
    ("loss", "vqgan"): {"disc_start": 0},
    ("regularizer", "semantic"): {"features": "encoder", "channels": 8, "proj_width": 16},
}


def tiny_spec(kind: str, name: str, given: dict[str, Any] | None = None) -> dict[str, Any]:
    """The component spec of ``kind``/``name`` at test size: ``given`` fields, then the tiny tables, then every
    nested component shrunk the same way."""
    cls = registry.lookup(kind, name)
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    named = TINY.get((kind, name), {})
    stale = sorted(set(named) - set(fields))
    assert not stale, f"TINY[{kind!r}, {name!r}] sets {stale}, which {cls.__name__}.Config does not have"
    spec = {k: v for k, v in (given or {}).items() if k != "name"}
    spec.update({k: v for k, v in TINY_KIND.get(kind, {}).items() if k in fields})
    spec.update(named)
    for field_name, f in fields.items():
        sub_kind = f.metadata.get("component")
        if sub_kind is None:
            continue
        sub = spec.get(field_name, _default(f))
        if sub is not None:
            spec[field_name] = tiny_spec(sub_kind, sub["name"], sub)
    return {"name": name, **spec}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None
