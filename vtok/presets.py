"""The schema of a YAML preset: ``model``, ``loss``, ``train`` and ``data`` sections.

Kept beside the config code and apart from the training machinery, so reading a
preset (``vtok.load_config``) imports neither accelerate nor any part package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vtok.config import component
from vtok.data import DataConfig
from vtok.stats import COLLAPSE_USAGE


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
    # Codebook-collapse alarm, read at every log after warmup: usage is the share of codes used over the
    # logging window (of as many as the window's tokens could use), perplexity that of the window's ids.
    collapse_usage: float = COLLAPSE_USAGE
    collapse_perplexity: float = 0.0
    stop_on_collapse: bool = False


@dataclass
class RunConfig:
    """A whole YAML preset: the model, its loss, training and data."""

    model: dict = component("model")
    loss: dict | None = component("loss", optional=True)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
