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

    # Optimisation steps of the run (each over grad_accum micro-batches); the cosine schedule ends here.
    steps: int = ranged(100_000, AT_LEAST_1)
    batch_size: int = ranged(8, AT_LEAST_1)
    # Micro-batches per step, their gradients averaged: a larger effective batch in the same memory.
    grad_accum: int = ranged(1, AT_LEAST_1)
    lr: float = ranged(1e-4, POSITIVE)  # peak learning rate of the model's AdamW, reached after warmup_steps
    # Peak learning rate of the GAN discriminator's AdamW (tokenizer runs); the same schedule.
    disc_lr: float = ranged(1e-4, POSITIVE)
    betas: list[float] = ranged([0.9, 0.95], DECAY)  # Adam's (beta1, beta2): two, checked below
    # AdamW's decoupled weight decay. Tokenizer runs apply it to every parameter (model and discriminator); AR runs only
    # to weight matrices, not to embeddings, norms or biases.
    weight_decay: float = ranged(0.05, NON_NEGATIVE)
    # Steps of linear warmup to lr; the codebook-collapse alarm also waits until they are over.
    warmup_steps: int = ranged(0, NON_NEGATIVE)
    min_lr_ratio: float = ranged(0.1, UNIT)  # after warmup the lr follows a cosine down to lr x min_lr_ratio at steps
    grad_clip: float = ranged(1.0, NON_NEGATIVE)  # 0: no clipping
    # Decay of an exponential moving average of the weights (warmed up as 1 - 1/(step + 10)); the run releases the
    # average as RUN/final and keeps it in checkpoints. null: no average, the trained weights are released.
    ema_decay: float | None = ranged(0.999, DECAY)
    # accelerate's mixed precision: the forward passes run under bf16 or fp16 autocast (quantization stays float32);
    # "no": float32 throughout.
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    compile: bool = False  # torch.compile the model's forward (and so its backward); state names unchanged
    # Seeds the initialisation (alike on every rank), the data order and augmentation and the sample grids; a resumed
    # run continues exactly as an uninterrupted one.
    seed: int = ranged(0, NON_NEGATIVE)
    # Steps between records in RUN/metrics.jsonl (the step's losses, lr, throughput, the window's code usage).
    log_every: int = ranged(50, AT_LEAST_1)
    save_every: int = ranged(1000, AT_LEAST_1)  # steps between resumable checkpoints (the last step always saves)
    # The newest checkpoints kept in RUN/checkpoints; older ones are deleted.
    keep_checkpoints: int = ranged(2, AT_LEAST_1)
    # Steps between grids in RUN/samples/: held-out crops over their reconstructions (tokenizers), one decoded sample
    # per class (AR models, when the shards' tokenizer is found).
    sample_every: int = ranged(1000, AT_LEAST_1)
    # Codebook-collapse alarm, read at every log after warmup: usage is the share of codes used over the
    # logging window (of as many as the window's tokens could use), perplexity that of the window's ids.
    collapse_usage: float = ranged(COLLAPSE_USAGE, NON_NEGATIVE)
    # Also alarm when the window's perplexity falls below this (0: off).
    collapse_perplexity: float = ranged(0.0, NON_NEGATIVE)
    # The alarm ends the run with an error (the last checkpoint intact) instead of a warning.
    stop_on_collapse: bool = False
    # Fine-tuning: start from a saved model's weights (a folder or Hub id; matching names and shapes load) and
    # freeze parts by name (encoder, quantizer, decoder, or any top-level module).
    init_from: str | None = None
    # Parts whose weights stay fixed; they run in eval mode (no dropout, no codebook EMA or restarts).
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
