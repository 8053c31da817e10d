"""Run-folder checkpoints that resume exactly: weights, optimisers and every rank's RNG, written atomically.

``RUN/checkpoints/step_N`` holds ``<name>.safetensors`` per module, ``optim.pt``,
``rng_rank<i>.pt`` per process and ``state.json``; ``RUN/checkpoints/latest`` names the
newest complete one. A model sharded by FSDP is saved instead by every rank into
``sharded/`` (its slices of the weights and optimiser states, :mod:`vtok.sharding`). A run killed at any moment leaves the previous checkpoint intact.

A damaged checkpoint file (a pickle where a tensor file was, a truncated
``.safetensors``) is refused in one line naming the file and the checkpoint to fall
back to. The fallback rule: delete the damaged ``step_N`` folder and re-run; where
``latest`` names a folder that no longer exists, the run resumes from the newest
complete checkpoint left.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from vtok.errors import VtokError
from vtok.io import atomic_dir, atomic_path, write_safetensors, write_torch
from vtok.memory import check_zip


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def _complete(run: Path) -> list[Path]:
    """The run's complete checkpoints (``state.json`` written last), oldest first."""
    return sorted(p for p in (run / "checkpoints").glob("step_*") if p.is_dir() and (p / "state.json").is_file())


def latest_checkpoint(run: Path) -> Path | None:
    """The checkpoint ``latest`` names; where the user deleted it (the fallback rule), the newest complete one."""
    pointer = run / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError):
        name = ""
    if not re.fullmatch(r"step_\d{8}", name):
        raise VtokError(f"{pointer} is damaged (it must name a step_N folder); {_fallback_hint(run, None)}")
    path = run / "checkpoints" / name
    if not path.exists():  # deleted as a damaged checkpoint's message says: resume from the previous one
        complete = _complete(run)
        return complete[-1] if complete else None
    if not (path / "state.json").is_file():
        raise VtokError(f"checkpoint {path} named by {pointer} is incomplete; {_fallback_hint(run, path)}")
    return path


def _fallback_hint(run: Path, damaged: Path | None) -> str:
    """How to resume from the checkpoint before ``damaged``: delete it (the documented fallback rule)."""
    earlier = [p for p in _complete(run) if damaged is None or p.name < damaged.name]
    if damaged is None:
        return f"write the newest step folder's name into it ({earlier[-1].name})" if earlier else "use a new --out"
    if earlier:
        return f"delete {damaged} to resume from {earlier[-1].name}"
    return f"no earlier checkpoint is kept; delete {run / 'checkpoints'} to start the run again"


def read_checkpoint_file(path: Path, run: Path) -> Any:
    """One file of a checkpoint (``.safetensors`` or a weights-only torch pickle); damage is one line naming it."""
    import pickle

    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        check_zip(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, EOFError, ValueError, KeyError, OSError) as err:
        reason = err.__class__.__name__
        raise VtokError(f"checkpoint file {path} is damaged ({reason}); {_fallback_hint(run, path.parent)}") from None


def save_weights(module: nn.Module, path: Path) -> None:
    from vtok.pretrained import unique_state

    write_safetensors(unique_state(module), path)


def load_weights(module: nn.Module, path: Path) -> None:
    from vtok.pretrained import load_state_strict

    load_state_strict(module, read_checkpoint_file(path, path.parent.parent.parent), str(path))


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def write_pointer(run: Path, step_dir: Path) -> None:
    with atomic_path(run / "checkpoints" / "latest") as tmp:
        tmp.write_text(step_dir.name + "\n")


def prune_checkpoints(run: Path, keep: int) -> None:
    steps = sorted((run / "checkpoints").glob("step_*"))
    for old in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    accelerator,
    run: Path,
    step: int,
    weights: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    keep: int,
    sharded: bool = False,
) -> None:
    """Write ``run/checkpoints/step_N`` atomically from every rank, then point ``latest`` at it.

    Each rank saves its RNG state; the main process writes ``<name>.safetensors`` per
    module, ``optim.pt`` and ``state.json``. ``sharded`` (an FSDP model, ``weights`` =
    ``{"model": model}``): every rank writes its slices into ``sharded/`` instead of the
    weight and optimiser files. Everything is written into a staging folder that the main
    process renames once all ranks are done, so a run killed at any moment leaves the
    previous checkpoint intact.
    """
    from vtok.sharding import SHARDED_DIR, save_sharded

    acc = accelerator
    target = checkpoint_dir(run, step)
    staging = target.with_name(target.name + ".staging")
    if acc.is_main_process:
        staging.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    write_torch(rng_state(), staging / f"rng_rank{acc.process_index}.pt")
    if sharded:
        save_sharded(weights["model"], optimizers, staging / SHARDED_DIR)
    acc.wait_for_everyone()
    if acc.is_main_process:
        with atomic_dir(target) as tmp:
            for f in staging.iterdir():
                f.rename(tmp / f.name)
            if not sharded:
                for name, module in weights.items():
                    save_weights(module, tmp / f"{name}.safetensors")
                write_torch({k: opt.state_dict() for k, opt in optimizers.items()}, tmp / "optim.pt")
            state = {"step": step, "processes": acc.num_processes, "sharded": sharded}
            (tmp / "state.json").write_text(json.dumps(state))
        staging.rmdir()
        write_pointer(run, target)
        prune_checkpoints(run, keep)
    acc.wait_for_everyone()


def load_checkpoint(
    accelerator,
    path: Path,
    weights: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    sharded: bool = False,
) -> int:
    """Restore what :func:`save_checkpoint` wrote (weights, optimizers, this rank's RNG); returns the step.

    ``sharded``: the model is FSDP-sharded (already prepared); every rank reads its slices.
    """
    from vtok.sharding import SHARDED_DIR, load_sharded

    run = path.parent.parent
    try:
        state = json.loads((path / "state.json").read_text())
        step, written_sharded = int(state["step"]), bool(state.get("sharded", False))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise VtokError(f"checkpoint file {path / 'state.json'} is damaged; {_fallback_hint(run, path)}") from None
    if written_sharded != sharded:
        how = "with" if written_sharded else "without"
        raise VtokError(f"checkpoint {path} was written {how} FSDP; resume it {how} the FSDP accelerate config")
    if sharded:
        try:
            load_sharded(weights["model"], optimizers, path / SHARDED_DIR)
        except (OSError, ValueError, KeyError, RuntimeError) as err:
            hint = _fallback_hint(run, path)
            raise VtokError(
                f"sharded checkpoint {path / SHARDED_DIR} is damaged ({err.__class__.__name__}); {hint}"
            ) from None
    else:
        for name, module in weights.items():
            load_weights(module, path / f"{name}.safetensors")
        optim = read_checkpoint_file(path / "optim.pt", run)
        try:
            for name, opt in optimizers.items():
                opt.load_state_dict(optim[name])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            hint = _fallback_hint(run, path)
            raise VtokError(
                f"checkpoint file {path / 'optim.pt'} is damaged ({err.__class__.__name__}); {hint}"
            ) from None
    rank_file = path / f"rng_rank{accelerator.process_index}.pt"
    if not rank_file.is_file():
        raise VtokError(f"{path} was written by fewer processes than this run has; resume with the same number")
    try:
        set_rng_state(read_checkpoint_file(rank_file, run))
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as err:
        hint = _fallback_hint(run, path)
        raise VtokError(f"checkpoint file {rank_file} is damaged ({err.__class__.__name__}); {hint}") from None
    return step


def remove_stale_temporaries(run: Path) -> None:
    """Delete what a run killed mid-write left behind: temporary and staging checkpoint folders."""
    folder = run / "checkpoints"
    stale_paths = [*run.glob(".*.tmp"), *folder.glob(".*.tmp"), *folder.glob(".*.old"), *folder.glob("*.staging")]
    for stale in stale_paths:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
