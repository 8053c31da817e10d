"""FSDP2 for the AR GPT: sharding on CPU ranks, sharded checkpoints, the released model gathered on rank 0.

``accelerate launch --config_file configs/accelerate/fsdp.yaml`` sets
``ACCELERATE_USE_FSDP=true`` in every rank. On GPUs accelerate's FSDP2 plugin then
shards the model when it is prepared together with its optimiser. On CPUs accelerate
1.16 falls back to plain data parallel (gloo), so :func:`shard_on_cpu` applies the same
FSDP2 sharding itself (torch's ``fully_shard``: every module whose class the config
names in ``fsdp_transformer_layer_cls_to_wrap``, then the root) and points the
optimiser at the sharded parameters. Either way the parameters are DTensors, each rank
holding its slice.

Checkpoints of a sharded model go through ``torch.distributed.checkpoint``: every rank
writes its slices of the weights and the AdamW moments into ``step_N/sharded/`` (one
file per rank plus ``.metadata``), and loading reads them back into the sharded model,
resharding where the layout differs. The released model (``RUN/final``) is gathered to
full tensors on rank 0 and written as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

SHARDED_DIR = "sharded"  # the torch.distributed.checkpoint folder inside a checkpoint


def fsdp_requested() -> bool:
    """Whether this process was launched with an accelerate FSDP config."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are FSDP2 shards (DTensors)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def wrap_classes() -> set[str]:
    """Class names the accelerate config shards one by one (``fsdp_transformer_layer_cls_to_wrap``)."""
    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    return {n.strip() for n in names.split(",") if n.strip()}


def shard_on_cpu(model: nn.Module, optimizers: list[torch.optim.Optimizer]) -> nn.Module:
    """FSDP2-shard ``model`` in place across the gloo process group; ``optimizers`` then update the shards.

    Each module whose class is in :func:`wrap_classes` is its own shard unit (all-gathered
    for its forward, resharded after it when ``FSDP_RESHARD_AFTER_FORWARD`` is not false),
    then the root takes the rest. ``fully_shard`` replaces every parameter by a new
    DTensor one, so each optimiser's parameter lists are remapped by parameter name.
    """
    from torch.distributed.fsdp import fully_shard

    names = {id(p): name for name, p in model.named_parameters()}
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in ("false", "no_shard")
    classes = wrap_classes()
    for module in list(model.modules())[1:]:
        if type(module).__name__ in classes:
            fully_shard(module, reshard_after_forward=reshard)
    fully_shard(model, reshard_after_forward=reshard)
    sharded = dict(model.named_parameters())
    for opt in optimizers:
        for group in opt.param_groups:
            group["params"] = [sharded[names[id(p)]] for p in group["params"]]
    return model


def save_sharded(model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], folder: Path) -> None:
    """Every rank writes its slices of ``model`` and ``optimizers`` into ``folder`` (a collective call)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    opts = tuple(optimizers.values())
    weights, moments = get_state_dict(model, opts)
    dcp.save({"model": weights, "optim": moments}, checkpoint_id=str(folder))


def load_sharded(model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], folder: Path) -> None:
    """Read what :func:`save_sharded` wrote into the sharded ``model`` and ``optimizers`` (a collective call)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    opts = tuple(optimizers.values())
    weights, moments = get_state_dict(model, opts)
    state = {"model": weights, "optim": moments}
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, opts, model_state_dict=state["model"], optim_state_dict=state["optim"])


def gathered_copy(model: nn.Module, main: bool) -> nn.Module | None:
    """An unsharded copy of the sharded ``model`` on the main process (None elsewhere); a collective call.

    Every rank takes part in gathering the full weights to the main process's CPU, which
    builds the model afresh from its registered spec (so buffers computed at build time
    are right) and loads them strictly.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from vtok.config import build_component

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not main:
        return None
    copy = build_component(type(model).registry_kind, model.spec, "released model")
    copy.load_state_dict(full, strict=True)
    return copy.eval()
