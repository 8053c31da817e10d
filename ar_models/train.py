"""AR training on token shards, on accelerate: one CPU to many GPUs, exact resume.

``vtok train configs/ar/gpt_b.yaml data.source=TOKENS_DIR --out RUN`` reads the shards
``vtok encode --shards`` wrote. The model's token layout (codebook sizes, grid or
length, end token) and its number of classes come from the shards, never from the
command line. Checkpoints, metrics and the released ``RUN/final`` follow the
tokenizer runs' conventions (:mod:`vtok.training`); sample grids are written when
the tokenizer that made the shards is found where they say.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from vtok.ar_models.gpt import GPT

from vtok.config import build_component, instantiate
from vtok.data import DataConfig
from vtok.errors import VtokError
from vtok.io import atomic_path
from vtok.shards import TokenShards, shard_batches
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


def layout_from_shards(model_cfg: dict[str, Any], shards: TokenShards) -> dict[str, Any]:
    """The model section with its layout fields replaced by the shards' layout."""
    cfg = dict(model_cfg)
    cfg["codebook_sizes"] = list(shards.codebook_sizes)
    cfg["grid"] = None if shards.grid is None else list(shards.grid)
    cfg["length"] = None if shards.grid is not None else shards.positions
    cfg["scales"] = shards.scales
    cfg["end_token"] = shards.has_lengths
    if shards.classes and cfg.get("num_classes", 0) > 0:
        cfg["num_classes"] = len(shards.classes)
    return cfg


class ARTrainer:
    """Model, optimizer, EMA and run folder of one AR training run."""

    def __init__(self, cfg: dict[str, Any], run: str | Path, progress: bool = True):
        from accelerate.utils import set_seed

        self.tcfg: TrainConfig = instantiate(TrainConfig, cfg["train"])
        self.dcfg: DataConfig = instantiate(DataConfig, cfg["data"])
        self.shards = TokenShards(self.dcfg.source)
        cfg = {**cfg, "model": layout_from_shards(cfg["model"], self.shards)}
        self.cfg, self.run, t = cfg, Path(run), self.tcfg
        self.accelerator = open_run(cfg, self.run, t)
        self.main = self.accelerator.is_main_process
        model: GPT = build_component("model", cfg["model"], "model")
        if not isinstance(model, GPT):
            raise VtokError(f"model {cfg['model']['name']!r} is not an AR model")
        self.ema = EMA(model, t.ema_decay) if t.ema_decay else None
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))
        self.step = 0
        resume = latest_checkpoint(self.run)
        weights = {"model": model, **({"ema": self.ema.model} if self.ema else {})}
        if resume is not None:
            self.step = load_checkpoint(self.accelerator, resume, weights, {"opt": opt})
        else:
            set_seed(t.seed + self.accelerator.process_index)
        self.model, self.opt = self.accelerator.prepare(model, opt)
        if self.ema is not None:
            self.ema.model.to(self.accelerator.device)
        self.metrics = MetricsLog(self.run / "metrics.jsonl", self.step if resume else None) if self.main else None
        self.progress = progress and self.main

    def released_model(self) -> GPT:
        return self.ema.model if self.ema is not None else self.accelerator.unwrap_model(self.model)

    def save_checkpoint(self) -> None:
        weights = {"model": self.accelerator.unwrap_model(self.model)}
        if self.ema is not None:
            weights["ema"] = self.ema.model
        save_checkpoint(
            self.accelerator, self.run, self.step, weights, {"opt": self.opt.optimizer}, self.tcfg.keep_checkpoints
        )

    def train(self) -> Path:
        """Run to ``train.steps``; returns ``RUN/final``."""
        t, acc = self.tcfg, self.accelerator
        batches = shard_batches(
            self.shards,
            t.batch_size,
            t.seed,
            self.step * t.grad_accum,
            acc.process_index,
            acc.num_processes,
            flip=self.dcfg.random_flip,
        )
        bar = tqdm(total=t.steps, initial=self.step, disable=not self.progress, desc="train ar", dynamic_ncols=True)
        tick, seen = time.perf_counter(), 0
        while self.step < t.steps:
            for group in self.opt.param_groups:
                group["lr"] = t.lr * lr_factor(self.step, t)
            self.model.train()
            self.opt.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(t.grad_accum):
                ids, labels, lengths = (x if x is None else x.to(acc.device) for x in next(batches))
                with acc.autocast():
                    loss, _ = self.model(ids, labels, lengths)
                acc.backward(loss / t.grad_accum)
                total += loss.item() / t.grad_accum
                seen += ids.shape[0] * ids.shape[1] * acc.num_processes
            logs = {"loss": total}
            if t.grad_clip > 0:
                logs["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), t.grad_clip))
            self.opt.step()
            if self.ema is not None:
                self.ema.update(acc.unwrap_model(self.model), self.step)
            self.step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
            if self.step % t.log_every == 0 or self.step == t.steps:
                record = {"step": self.step, **logs, "lr": t.lr * lr_factor(self.step - 1, t)}
                record["tokens_per_s"] = seen / max(time.perf_counter() - tick, 1e-9)
                if self.metrics is not None:
                    self.metrics.write(record)
                tick, seen = time.perf_counter(), 0
            if self.step % t.save_every == 0 or self.step == t.steps:
                self.save_checkpoint()
        bar.close()
        final = self.run / "final"
        if self.main:
            self.released_model().save_pretrained(final)
            with atomic_path(final / "shards.json") as tmp:
                Path(tmp).write_text(json.dumps(self.shards.index, indent=1) + "\n")
        acc.wait_for_everyone()
        return final


def train_ar(cfg: dict[str, Any], run: str | Path, progress: bool = True) -> Path:
    """Train (or resume) the AR run described by the resolved ``cfg`` in folder ``run``."""
    return ARTrainer(cfg, run, progress).train()
