"""What every vtok training run shares: its config, EMA weights, the lr schedule,
atomic checkpoints that resume exactly, and JSONL metrics."""

from __future__ import annotations

import copy
import json
import math
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vtok.config import component
from vtok.data import DataConfig
from vtok.errors import VtokError
from vtok.io import atomic_dir, atomic_path


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. ``batch_size`` is per device and per micro-step;
    the effective batch is batch_size x grad_accum x number of processes."""

    steps: int = 100_000
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-4
    disc_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.05
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float | None = 0.999
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every: int = 50
    save_every: int = 1000
    keep_checkpoints: int = 2
    sample_every: int = 1000


@dataclass
class RunConfig:
    """A whole YAML preset: the model, its loss, training and data."""

    model: dict = component("model")
    loss: dict | None = component("loss", optional=True)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)


def accelerator_available() -> bool:
    """Whether torch sees a GPU-like device; without one, ranks launched by torchrun
    (``accelerate launch --multi_gpu``) must still form a gloo process group on the CPU."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def check_run_config(run: Path, cfg: dict[str, Any]) -> None:
    """A run folder belongs to one model, loss and data; only ``train`` may change on resume."""
    path = run / "config.json"
    if path.is_file():
        old = json.loads(path.read_text())
        for key in ("model", "loss", "data"):
            if old.get(key) != cfg.get(key):
                raise VtokError(f"{run} holds a run with a different '{key}' config; use a new --out folder")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(cfg, indent=2) + "\n")


def open_run(cfg: dict[str, Any], run: Path, tcfg: TrainConfig):
    """The accelerate ``Accelerator`` of a run, its folder claimed by the main process, seeds set alike on all ranks."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(mixed_precision=tcfg.mixed_precision, cpu=not accelerator_available())
    if accelerator.is_main_process:
        run.mkdir(parents=True, exist_ok=True)
        check_run_config(run, cfg)
    accelerator.wait_for_everyone()
    set_seed(tcfg.seed)  # identical initialisation on every rank
    return accelerator


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``steps``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


class EMA:
    """Exponential moving average of a model's parameters, warmed up as ``1 - 1/(step+10)``
    early on so short runs are not dominated by the random initialisation. Buffers
    (codebooks updated by EMA, norm statistics) are copied, not averaged."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        own = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            own[name].lerp_(p.detach(), 1 - d)
        own_buffers = dict(self.model.named_buffers())
        for name, b in model.named_buffers():
            own_buffers[name].copy_(b)


# --- checkpoints ------------------------------------------------------------------


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
    state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    save_file(state, str(path))


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
    torch.save(rng_state(), staging / f"rng_rank{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        with atomic_dir(target) as tmp:
            for f in staging.iterdir():
                f.rename(tmp / f.name)
            for name, module in weights.items():
                save_weights(module, tmp / f"{name}.safetensors")
            torch.save({k: opt.state_dict() for k, opt in optimizers.items()}, tmp / "optim.pt")
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


class MetricsLog:
    """Append-only JSONL metrics; on resume, lines past the resumed step are dropped
    so the curve continues exactly where the checkpoint left it."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.is_file():
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(f"{line}\n" for line in kept))
        elif resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
