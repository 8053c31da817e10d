"""The schema of a YAML preset: ``model``, ``loss``, ``train`` and ``data`` sections.

Kept beside the config code and apart from the training machinery, so reading a
preset (``vtok.load_config``) imports neither accelerate nor any part package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from vtok.config import AT_LEAST_1, DECAY, NON_NEGATIVE, POSITIVE, UNIT, component, ranged
from vtok.data import DataConfig
from vtok.errors import VtokError
from vtok.stats import COLLAPSE_USAGE


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping. ``batch_size`` is per device and per micro-step;
    the effective batch is batch_size x grad_accum x number of processes."""

    steps: int = ranged(100_000, AT_LEAST_1)
    batch_size: int = ranged(8, AT_LEAST_1)
    grad_accum: int = ranged(1, AT_LEAST_1)
    lr: float = ranged(1e-4, POSITIVE)
    disc_lr: float = ranged(1e-4, POSITIVE)
    betas: list[float] = ranged([0.9, 0.95], DECAY)  # Adam's (beta1, beta2): two, checked below
    weight_decay: float = ranged(0.05, NON_NEGATIVE)
    warmup_steps: int = ranged(0, NON_NEGATIVE)
    min_lr_ratio: float = ranged(0.1, UNIT)
    grad_clip: float = ranged(1.0, NON_NEGATIVE)  # 0: no clipping
    ema_decay: float | None = ranged(0.999, DECAY)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compile: bool = False  # torch.compile the model's forward (and so its backward); state names unchanged
    seed: int = ranged(0, NON_NEGATIVE)
    log_every: int = ranged(50, AT_LEAST_1)
    save_every: int = ranged(1000, AT_LEAST_1)
    keep_checkpoints: int = ranged(2, AT_LEAST_1)
    sample_every: int = ranged(1000, AT_LEAST_1)
    # Codebook-collapse alarm, read at every log after warmup: usage is the share of codes used over the
    # logging window (of as many as the window's tokens could use), perplexity that of the window's ids.
    collapse_usage: float = ranged(COLLAPSE_USAGE, NON_NEGATIVE)
    collapse_perplexity: float = ranged(0.0, NON_NEGATIVE)
    stop_on_collapse: bool = False
    # Fine-tuning: start from a saved model's weights (a folder or Hub id; matching names and shapes load) and
    # freeze parts by name (encoder, quantizer, decoder, or any top-level module).
    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    reinit_unused_codes: bool = False  # with init_from: codes unused on the first batches restart there (k-means)

    def __post_init__(self) -> None:
        if len(self.betas) != 2:  # [] once reached the optimiser as an IndexError
            raise VtokError(f"train.betas must be two numbers [beta1, beta2], got {list(self.betas)}")
        if self.reinit_unused_codes and self.init_from is None:
            raise VtokError("train.reinit_unused_codes re-fits the codes of the model in train.init_from; set that")


@dataclass
class RunConfig:
    """A whole YAML preset: the model, its loss, training and data."""

    model: dict = component("model")
    loss: dict | None = component("loss", optional=True)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
