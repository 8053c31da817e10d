"""Fine-tuning: start a run from a saved model's weights, and freeze parts of the model by name.

``train.init_from`` (a model folder or a Hub id) loads every tensor that matches in
name and shape, lists the rest in one log line, and refuses what would make the
model meaningless (another family, another code dimension). ``train.freeze`` names
parts (``encoder``, ``quantizer``, ``decoder``, or any top-level module): their
parameters get no gradient and no optimiser state, and they run in eval mode, so a
frozen quantizer's EMA codebook and restarts stand still.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vtok.errors import VtokError
from vtok.io import file_sha256

log = logging.getLogger("vtok.train")


def part_modules(model: nn.Module) -> dict[str, list[nn.Module]]:
    """Part name -> its modules: each top-level child under its own name or the part its model assigns it to."""
    groups: dict[str, str] = model.part_of  # e.g. quant_conv belongs to the encoder
    parts: dict[str, list[nn.Module]] = {}
    for name, child in model.named_children():
        parts.setdefault(groups.get(name, name), []).append(child)
    return parts


def freeze(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Turn off gradients of the named parts; returns their modules (to be kept in eval mode)."""
    parts = part_modules(model)
    unknown = [n for n in names if n not in parts]
    if unknown:
        raise VtokError(f"train.freeze: no part {unknown[0]!r} in this model; its parts: {', '.join(parts)}")
    frozen = [m for n in names for m in parts[n]]
    for module in frozen:
        module.requires_grad_(False)
    if names and not any(p.requires_grad for p in model.parameters()):
        raise VtokError("train.freeze freezes every part: nothing would train")
    return frozen


def init_from(model: nn.Module, ref: str | Path) -> dict[str, Any]:
    """Load the tensors of the model at ``ref`` that match ``model`` in name and shape.

    Returns:
        What to record in the run folder: the source, its weights' sha256, loaded and skipped keys.
    """
    from safetensors.torch import load_file

    from vtok.hub import model_dir
    from vtok.pretrained import WEIGHTS_NAME, read_config

    folder = model_dir(ref)
    spec = read_config(folder)["model"]
    own = model.spec
    if spec["name"] != own["name"]:
        raise VtokError(f"train.init_from {ref} is a {spec['name']!r} model; this run trains a {own['name']!r} model")
    src_q, own_q = spec.get("quantizer"), own.get("quantizer")
    if isinstance(src_q, dict) and isinstance(own_q, dict) and src_q.get("dim") != own_q.get("dim"):
        raise VtokError(f"train.init_from {ref} has code dim {src_q.get('dim')}, this model {own_q.get('dim')}")
    weights = folder / WEIGHTS_NAME
    try:
        state = model.adapt_state(load_file(str(weights)))
    except (OSError, ValueError) as err:
        raise VtokError(f"{weights} is not a readable safetensors file ({err})") from None
    target = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    skipped = sorted(set(target) - set(loaded))
    unused = sorted(set(state) - set(loaded))
    if not loaded:
        raise VtokError(f"train.init_from {ref}: no tensor matches this model in name and shape")
    with torch.no_grad():
        for key, value in loaded.items():
            target[key].copy_(value)
    if skipped or unused:
        log.warning(
            "init_from %s: loaded %d tensors; kept the preset's initialisation for %d (%s); unused from the file: %d%s",
            ref, len(loaded), len(skipped), ", ".join(skipped[:6]) + (" ..." if len(skipped) > 6 else ""),
            len(unused), f" ({', '.join(unused[:6])})" if unused else "",
        )  # fmt: skip
    return {"init_from": str(ref), "sha256": file_sha256(weights), "loaded": len(loaded), "skipped": skipped}
