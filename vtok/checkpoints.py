"""Run-folder checkpoints that resume exactly: weights, optimisers and every rank's RNG, written atomically.

``RUN/checkpoints/step_N`` holds ``<name>.safetensors`` per module, ``optim.pt``,
``rng_rank<i>.pt`` per process and ``state.json``; ``RUN/checkpoints/latest`` names the
newest complete one. A run killed at any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from vtok.errors import VtokError
from vtok.io import atomic_dir, atomic_path, write_safetensors, write_torch


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def latest_checkpoint(run: Path) -> Path | None:
    pointer = run / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run / "checkpoints" / pointer.read_text().strip()
    if not (path / "state.json").is_file():
        raise VtokError(f"checkpoint {path} named by {pointer} is incomplete")
    return path


def save_weights(module: nn.Module, path: Path) -> None:
    from vtok.pretrained import unique_state

    write_safetensors(unique_state(module), path)


def load_weights(module: nn.Module, path: Path) -> None:
    from vtok.pretrained import load_state_strict

    load_state_strict(module, load_file(str(path)), str(path))


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
) -> None:
    """Write ``run/checkpoints/step_N`` atomically from every rank, then point ``latest`` at it.

    Each rank saves its RNG state; the main process writes ``<name>.safetensors`` per
    module, ``optim.pt`` and ``state.json``. A run killed at any moment leaves the
    previous checkpoint intact.
    """
    acc = accelerator
    target = checkpoint_dir(run, step)
    staging = target.with_name(target.name + ".staging")
    if acc.is_main_process:
        staging.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    write_torch(rng_state(), staging / f"rng_rank{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        with atomic_dir(target) as tmp:
            for f in staging.iterdir():
                f.rename(tmp / f.name)
            for name, module in weights.items():
                save_weights(module, tmp / f"{name}.safetensors")
            write_torch({k: opt.state_dict() for k, opt in optimizers.items()}, tmp / "optim.pt")
            (tmp / "state.json").write_text(json.dumps({"step": step, "processes": acc.num_processes}))
        staging.rmdir()
        write_pointer(run, target)
        prune_checkpoints(run, keep)
    acc.wait_for_everyone()


def load_checkpoint(
    accelerator, path: Path, weights: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> int:
    """Restore what :func:`save_checkpoint` wrote (weights, optimizers, this rank's RNG); returns the step."""
    state = json.loads((path / "state.json").read_text())
    for name, module in weights.items():
        load_weights(module, path / f"{name}.safetensors")
    optim = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    for name, opt in optimizers.items():
        opt.load_state_dict(optim[name])
    rank_file = path / f"rng_rank{accelerator.process_index}.pt"
    if not rank_file.is_file():
        raise VtokError(f"{path} was written by fewer processes than this run has; resume with the same number")
    set_rng_state(torch.load(rank_file, map_location="cpu", weights_only=True))
    return int(state["step"])


def remove_stale_temporaries(run: Path) -> None:
    """Delete what a run killed mid-write left behind: temporary and staging checkpoint folders."""
    folder = run / "checkpoints"
    stale_paths = [*run.glob(".*.tmp"), *folder.glob(".*.tmp"), *folder.glob(".*.old"), *folder.glob("*.staging")]
    for stale in stale_paths:
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
