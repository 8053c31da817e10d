"""Tokenizer training on accelerate: one CPU to many GPUs and nodes (``accelerate launch``).

Generator and PatchGAN discriminator alternate each step once ``disc_start`` is
reached. A run folder holds ``config.json`` (the resolved config), checkpoints
written atomically every ``save_every`` steps, ``metrics.jsonl``, reconstruction
grids in ``samples/`` and the released model in ``final/``. Starting the same
command again resumes from the last checkpoint and continues the same loss curve:
weights, EMA, optimizers, schedules, RNG states and the data position are restored.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vtok.config import build_component, instantiate
from vtok.data import DataConfig, iterate_batches, make_dataset
from vtok.errors import VtokError
from vtok.images import make_grid, save_image
from vtok.stats import CodeUsage
from vtok.training import (
    EMA,
    MetricsLog,
    TrainConfig,
    latest_checkpoint,
    load_checkpoint,
    lr_factor,
    open_run,
    save_checkpoint,
)

log = logging.getLogger("vtok.train")


def _lossless_state(loss_fn: torch.nn.Module) -> torch.nn.Module:
    """The part of the loss with training state (discriminator, LeCam anchors), without the frozen perceptual net."""
    keep = torch.nn.Module()
    keep.discriminator = loss_fn.discriminator
    keep.register_buffer("lecam_real", loss_fn.lecam_real)
    keep.register_buffer("lecam_fake", loss_fn.lecam_fake)
    return keep


class TokenizerTrainer:
    """Holds the model, loss, optimizers and run folder of one tokenizer training run."""

    def __init__(self, cfg: dict[str, Any], run: str | Path, progress: bool = True):
        from accelerate.utils import set_seed

        if cfg.get("loss") is None:
            raise VtokError("a tokenizer run needs a 'loss' section (e.g. name: vqgan)")
        self.cfg = cfg
        self.run = Path(run)
        self.tcfg: TrainConfig = instantiate(TrainConfig, cfg["train"])
        self.dcfg: DataConfig = instantiate(DataConfig, cfg["data"])
        t = self.tcfg
        self.accelerator = open_run(cfg, self.run, t)
        self.main = self.accelerator.is_main_process
        model = build_component("model", cfg["model"], "model")
        self.loss_fn = build_component("loss", cfg["loss"], "loss").to(self.accelerator.device)
        self.ema = EMA(model, t.ema_decay) if t.ema_decay else None
        opt_g = torch.optim.AdamW(model.parameters(), lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        disc = self.loss_fn.discriminator
        opt_d = torch.optim.AdamW(disc.parameters(), lr=t.disc_lr, betas=tuple(t.betas), weight_decay=t.weight_decay)
        self.step = 0
        resume = latest_checkpoint(self.run)
        if resume is not None:
            self._load(resume, model, opt_g, opt_d)
        else:
            set_seed(t.seed + self.accelerator.process_index)
        self.model, self.disc, self.opt_g, self.opt_d = self.accelerator.prepare(model, disc, opt_g, opt_d)
        if self.ema is not None:
            self.ema.model.to(self.accelerator.device)
        self.metrics = MetricsLog(self.run / "metrics.jsonl", self.step if resume else None) if self.main else None
        self.progress = progress and self.main
        self.resumed_from = resume

    # --- checkpoints ---------------------------------------------------------------

    def _weights(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        weights = {"model": model, "loss": _lossless_state(self.loss_fn)}
        if self.ema is not None:
            weights["ema"] = self.ema.model
        return weights

    def _load(self, path: Path, model: torch.nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer):
        self.step = load_checkpoint(self.accelerator, path, self._weights(model), {"opt_g": opt_g, "opt_d": opt_d})

    def save_checkpoint(self) -> None:
        model = self.accelerator.unwrap_model(self.model)
        optimizers = {"opt_g": self.opt_g.optimizer, "opt_d": self.opt_d.optimizer}
        save_checkpoint(
            self.accelerator, self.run, self.step, self._weights(model), optimizers, self.tcfg.keep_checkpoints
        )

    # --- the loop ------------------------------------------------------------------

    def released_model(self) -> torch.nn.Module:
        return self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.model)

    def train(self) -> Path:
        """Run to ``train.steps``; returns the folder of the released model (``RUN/final``)."""
        t, acc = self.tcfg, self.accelerator
        batches = iterate_batches(
            self.dcfg, t.batch_size, t.seed, self.step * t.grad_accum, acc.process_index, acc.num_processes
        )
        usage = CodeUsage(acc.unwrap_model(self.model).codebook_sizes)
        bar = tqdm(total=t.steps, initial=self.step, disable=not self.progress, desc="train", dynamic_ncols=True)
        tick, seen = time.perf_counter(), 0
        while self.step < t.steps:
            logs = self._train_step([next(batches).to(acc.device) for _ in range(t.grad_accum)], usage)
            self.step += 1
            seen += t.batch_size * t.grad_accum * acc.num_processes
            bar.update(1)
            bar.set_postfix(loss=f"{logs['total']:.4f}")
            if self.step % t.log_every == 0 or self.step == t.steps:
                stats = usage.compute()[0]
                elapsed = time.perf_counter() - tick
                record = {"step": self.step, **logs, "lr": t.lr * lr_factor(self.step - 1, t)}
                record.update(codebook_usage=stats["usage"], perplexity=stats["perplexity"])
                record["images_per_s"] = seen / max(elapsed, 1e-9)
                if self.metrics is not None:
                    self.metrics.write(record)
                usage.reset()
                tick, seen = time.perf_counter(), 0
            if self.step % t.sample_every == 0 or self.step == t.steps:
                self.save_samples()
            if self.step % t.save_every == 0 or self.step == t.steps:
                self.save_checkpoint()
        bar.close()
        final = self.run / "final"
        if self.main:
            self.released_model().save_pretrained(final)
        acc.wait_for_everyone()
        return final

    def _train_step(self, micro: list[torch.Tensor], usage: CodeUsage) -> dict[str, float]:
        t, acc = self.tcfg, self.accelerator
        gan = self.loss_fn.gan_active(self.step)
        # The schedule is a function of the step alone, so nothing about it needs saving.
        for opt, base in ((self.opt_g, t.lr), (self.opt_d, t.disc_lr)):
            for group in opt.param_groups:
                group["lr"] = base * lr_factor(self.step, t)
        self.model.train()
        self.opt_g.zero_grad(set_to_none=True)
        last_layer = acc.unwrap_model(self.model).last_decoder_weight()
        recons, logs = [], {}
        for i, x in enumerate(micro):
            sync = acc.no_sync(self.model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync, acc.autocast():
                out = self.model(x)
                loss, logs = self.loss_fn.generator_loss(x, out, self.step, last_layer, self.disc)
                acc.backward(loss / len(micro))
            usage.update(out.tokens.ids)
            recons.append(out.recon.detach())
        if t.grad_clip > 0:
            logs["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), t.grad_clip))
        self.opt_g.step()
        if gan:
            self.opt_d.zero_grad(set_to_none=True)
            for x, recon in zip(micro, recons):
                d_loss, d_logs = self.loss_fn.discriminator_loss(x, recon, self.disc)
                acc.backward(d_loss / len(micro))
            if t.grad_clip > 0:
                acc.clip_grad_norm_(self.disc.parameters(), t.grad_clip)
            self.opt_d.step()
            logs.update(d_logs)
        if self.ema is not None:
            self.ema.update(acc.unwrap_model(self.model), self.step)
        return logs

    @torch.no_grad()
    def save_samples(self, count: int = 8) -> None:
        """Held-out originals (top) over their reconstructions (bottom) in ``samples/``."""
        if not self.main:
            return
        dataset = make_dataset(self.dcfg, self.tcfg.seed, split="heldout")
        step = max(1, len(dataset) // count)
        x = torch.stack([dataset[(0, i * step)] for i in range(min(count, len(dataset)))])
        model = self.released_model()
        was_training = model.training
        model.eval()
        recon = model.decode(model.encode(x.to(self.accelerator.device))).cpu()
        model.train(was_training)
        save_image(make_grid(torch.cat([x, recon]), ncol=len(x)), self.run / "samples" / f"step_{self.step:08d}.png")


def train_tokenizer(cfg: dict[str, Any], run: str | Path, progress: bool = True) -> Path:
    """Train (or resume) the tokenizer run described by the resolved ``cfg`` in folder ``run``."""
    return TokenizerTrainer(cfg, run, progress).train()
