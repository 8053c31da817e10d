"""What every vtok training run shares: the :class:`Trainer` loop (accelerator, resume,
EMA, the lr / log / sample / save cadence, the final save), EMA weights and the lr
schedule. The atomic checkpoints that resume exactly are in :mod:`vtok.checkpoints`,
the JSONL metrics log in :mod:`vtok.metrics_log`.

A family's trainer subclasses :class:`Trainer` and supplies only what differs: the
model and optimisers, the batches, one optimisation step, and its sample grid."""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from vtok.checkpoints import latest_checkpoint, load_checkpoint, remove_stale_temporaries, save_checkpoint
from vtok.config import instantiate
from vtok.data import DataConfig
from vtok.errors import VtokError
from vtok.io import atomic_path, dumps_json
from vtok.metrics_log import MetricsLog, read_metrics
from vtok.presets import TrainConfig

# read_metrics: where the tests and benchmarks of every family read a run's curve.
__all__ = ["EMA", "MetricsLog", "Trainer", "lr_factor", "open_run", "read_metrics"]


def accelerator_available() -> bool:
    """Whether torch sees a GPU-like device; without one, ranks launched by torchrun
    (``accelerate launch --multi_gpu``) must still form a gloo process group on the CPU."""
    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or torch.backends.mps.is_available() or bool(xpu and xpu.is_available())


def check_run_config(run: Path, cfg: dict[str, Any]) -> None:
    """A run folder belongs to one model, loss and data; only ``train`` may change on resume."""
    path = run / "config.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise VtokError(f"{path} is not valid JSON; this is not a run folder vtok can resume") from None
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
        remove_stale_temporaries(run)
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


# --- the loop ------------------------------------------------------------------------


class Trainer:
    """One training run: accelerator, resume, EMA, metrics, the lr/log/sample/save cadence, the final save.

    Subclasses build the model and optimisers (:meth:`build`), give the batches
    (:meth:`batches`), run one optimisation step (:meth:`train_step`) and may add
    window statistics to the log (:meth:`window_stats`), a sample grid
    (:meth:`save_samples`) and files beside the released model (:meth:`finalize`).
    Every optimiser follows the same schedule: its ``base_lr`` times :func:`lr_factor`.
    """

    progress_name = "train"
    throughput_unit = "images"  # what the logged *_per_s counts

    def __init__(self, cfg: dict[str, Any], run: str | Path, progress: bool = True):
        from accelerate.utils import set_seed

        self.cfg = cfg
        self.run = Path(run)
        self.tcfg: TrainConfig = instantiate(TrainConfig, cfg["train"])
        self.dcfg: DataConfig = instantiate(DataConfig, cfg["data"])
        self.accelerator = open_run(cfg, self.run, self.tcfg)
        self.main = self.accelerator.is_main_process
        self.frozen: list[nn.Module] = []
        model = self.build()
        self.resumed_from = latest_checkpoint(self.run)
        if self.resumed_from is None and self.tcfg.init_from is not None:
            self.initialise_from(model)
        elif self.resumed_from is None:
            self.initialise_fresh(model)
        self.sharded = self._sharding_requested()
        if self.sharded and self.tcfg.ema_decay:
            raise VtokError("train.ema_decay keeps a whole copy of the model on every rank; set it to null under FSDP")
        self.ema = EMA(model, self.tcfg.ema_decay) if self.tcfg.ema_decay else None
        self.step = 0
        if self.resumed_from is not None and not self.sharded:
            self.step = load_checkpoint(self.accelerator, self.resumed_from, self._weights(model), self._optimizers())
        elif self.resumed_from is None:
            set_seed(self.tcfg.seed + self.accelerator.process_index)
        if self.tcfg.compile:
            from vtok.fast import require_compile

            require_compile()
            model.compile(dynamic=False)
        if self.sharded:
            self.prepare_sharded(model)
            if self.resumed_from is not None:  # a sharded checkpoint loads into the sharded model
                self.step = load_checkpoint(
                    self.accelerator, self.resumed_from, {"model": self.model}, self._optimizers(), sharded=True
                )
        else:
            self.model = self.accelerator.prepare(model)
            self.prepare_others()
        if self.ema is not None:
            self.ema.model.to(self.accelerator.device)
        resume_step = self.step if self.resumed_from else None
        self.metrics = MetricsLog(self.run / "metrics.jsonl", resume_step) if self.main else None
        self.progress = progress and self.main

    # --- what a family supplies ------------------------------------------------------

    def build(self) -> nn.Module:
        """Build the model (unprepared), and the optimisers and other modules in ``self.optimizers`` etc."""
        raise NotImplementedError

    def prepare_others(self) -> None:
        """Hand the optimisers (and any other module) to ``self.accelerator.prepare``."""
        raise NotImplementedError

    def prepare_sharded(self, model: nn.Module) -> None:
        """Under an FSDP accelerate config: shard ``model`` (into ``self.model``) with its optimisers."""
        raise VtokError(f"FSDP shards the AR GPT only; train {type(model).__name__} without the FSDP accelerate config")

    def checkpoint_modules(self, model: nn.Module) -> dict[str, nn.Module]:
        """Modules saved in a checkpoint besides EMA (``model`` is unwrapped)."""
        return {"model": model}

    def raw_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, float]]:
        """Each optimiser (unwrapped) with its base learning rate."""
        raise NotImplementedError

    def batches(self) -> Iterator[Any]:
        """This rank's endless batches from the current step on."""
        raise NotImplementedError

    def train_step(self, micro: list[Any]) -> tuple[dict[str, float], int]:
        """One optimisation step over ``grad_accum`` micro-batches -> (logs, samples seen on this rank)."""
        raise NotImplementedError

    def window_stats(self) -> dict[str, float]:
        """Statistics over the logging window (the window then restarts)."""
        return {}

    def save_samples(self) -> None:
        """Write ``samples/step_N.png`` (main process)."""

    def finalize(self, final: Path) -> None:
        """Files written beside the released model (main process)."""

    def on_logged(self, record: dict[str, Any]) -> None:
        """Called on every rank after each log record is made (e.g. to raise an alarm)."""

    # --- the shared machinery --------------------------------------------------------

    def trainable(self, model: nn.Module) -> list[nn.Parameter]:
        """Apply ``train.freeze`` and return the parameters left to the optimiser (called from ``build``)."""
        from vtok.finetune import freeze

        self.frozen = freeze(model, self.tcfg.freeze)
        return [p for p in model.parameters() if p.requires_grad]

    def initialise_fresh(self, model: nn.Module) -> None:
        """A fresh run's data-dependent initialisation, before the first step (none by default)."""

    def initialise_from(self, model: nn.Module) -> None:
        """``train.init_from``: the saved model's matching weights; what was loaded is kept in the run folder."""
        from vtok.finetune import init_from

        record = init_from(model, self.tcfg.init_from)
        if self.main:
            with atomic_path(self.run / "init_from.json") as tmp:
                tmp.write_text(dumps_json(record, indent=1) + "\n")

    def _sharding_requested(self) -> bool:
        """An FSDP accelerate config on GPUs, or on several CPU ranks (one CPU process has nothing to shard)."""
        from accelerate.utils import DistributedType

        from vtok.sharding import fsdp_requested

        acc = self.accelerator
        return fsdp_requested() and (acc.distributed_type == DistributedType.FSDP or acc.num_processes > 1)

    def _weights(self, model: nn.Module) -> dict[str, nn.Module]:
        weights = self.checkpoint_modules(model)
        if self.ema is not None:
            weights["ema"] = self.ema.model
        return weights

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: getattr(opt, "optimizer", opt) for name, (opt, _) in self.raw_optimizers().items()}

    def released_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.model)

    def save_checkpoint(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        weights = {"model": self.model} if self.sharded else self._weights(model)
        keep = self.tcfg.keep_checkpoints
        save_checkpoint(self.accelerator, self.run, self.step, weights, self._optimizers(), keep, self.sharded)

    def _set_lr(self) -> None:
        # The schedule is a function of the step alone, so nothing about it needs saving.
        factor = lr_factor(self.step, self.tcfg)
        for opt, base in self.raw_optimizers().values():
            for group in opt.param_groups:
                group["lr"] = base * factor

    def train(self) -> Path:
        """Run to ``train.steps``; returns the folder of the released model (``RUN/final``)."""
        t, acc = self.tcfg, self.accelerator
        batches = self.batches()
        bar = tqdm(
            total=t.steps, initial=self.step, disable=not self.progress, desc=self.progress_name, dynamic_ncols=True
        )
        tick, seen, shown = time.perf_counter(), 0, {}
        try:
            while self.step < t.steps:
                self._set_lr()
                self.model.train()
                for module in self.frozen:  # frozen parts: no dropout, no codebook EMA or restarts
                    module.eval()
                logs, count = self.train_step([next(batches) for _ in range(t.grad_accum)])
                if self.ema is not None:
                    self.ema.update(acc.unwrap_model(self.model), self.step)
                self.step += 1
                seen += count * acc.num_processes
                bar.update(1)
                if self.step % t.log_every == 0 or self.step == t.steps:
                    window = self.window_stats()
                    record = {"step": self.step, **logs, "lr": t.lr * lr_factor(self.step - 1, t), **window}
                    record[f"{self.throughput_unit}_per_s"] = seen / max(time.perf_counter() - tick, 1e-9)
                    if self.metrics is not None:
                        self.metrics.write(record)
                    tick, seen = time.perf_counter(), 0
                    shown = {k: f"{v:.3g}" for k, v in window.items() if isinstance(v, float)}
                    self.on_logged(record)
                bar.set_postfix(loss=f"{logs['loss' if 'loss' in logs else 'total']:.4f}", **shown)
                # A sharded GPT runs only with every rank, so no sample grids under FSDP (said in the guide).
                if (self.step % t.sample_every == 0 or self.step == t.steps) and self.main and not self.sharded:
                    # Samples never touch the training RNG (building a model for them draws from it), so a
                    # resumed run continues exactly as an uninterrupted one.
                    with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []):
                        self.save_samples()
                if self.step % t.save_every == 0 or self.step == t.steps:
                    self.save_checkpoint()
        finally:
            bar.close()  # so an error line starts on a line of its own
        final = self.run / "final"
        if self.sharded:
            from vtok.sharding import gathered_copy

            released = gathered_copy(self.model, self.main)  # every rank sends its slices
        if self.main:
            (released if self.sharded else self.released_model()).save_pretrained(final)
            self.finalize(final)
        acc.wait_for_everyone()
        return final
