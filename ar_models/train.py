"""AR training on token shards, on accelerate: one CPU to many GPUs, exact resume.

``vtok train configs/ar/gpt_b.yaml data.source=TOKENS_DIR --out RUN`` reads the shards
``vtok encode --shards`` wrote. The model's token layout (codebook sizes, grid or
length, end token) and its number of classes come from the shards, never from the
command line. The run folder, resume and cadence are :class:`vtok.training.Trainer`'s;
sample grids (one sample per class, decoded) are written when the tokenizer that made
the shards is found where the shards' index says.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, generate
from vtok.config import build_component, instantiate
from vtok.data import DataConfig
from vtok.errors import VtokError
from vtok.images import make_grid, save_image
from vtok.io import atomic_path
from vtok.registry import register
from vtok.shards import TokenShards, shard_batches
from vtok.training import Trainer

log = logging.getLogger("vtok.train")


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


@register("trainer", "ar")
class ARTrainer(Trainer):
    """The GPT and its optimiser of one AR run."""

    progress_name = "train ar"
    throughput_unit = "tokens"

    def __init__(self, cfg: dict[str, Any], run: str | Path, progress: bool = True):
        self.shards = TokenShards(instantiate(DataConfig, cfg["data"]).source)
        self._sample_tokenizer: Any = None
        super().__init__({**cfg, "model": layout_from_shards(cfg["model"], self.shards)}, run, progress)

    def build(self) -> GPT:
        t = self.tcfg
        model = build_component("model", self.cfg["model"], "model")
        if not isinstance(model, GPT):
            raise VtokError(f"model {self.cfg['model']['name']!r} is not an AR model")
        decay, no_decay = [], []
        trainable = {id(p) for p in self.trainable(model)}
        for name, p in model.named_parameters():
            if id(p) in trainable:
                (no_decay if p.ndim < 2 or "embedding" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))
        return model

    def prepare_others(self) -> None:
        self.opt = self.accelerator.prepare(self.opt)

    def prepare_sharded(self, model: GPT) -> None:
        """FSDP2: accelerate shards the GPT and its optimiser together on GPUs; on CPU ranks vtok does."""
        from accelerate.utils import DistributedType

        from vtok.sharding import shard_on_cpu

        if self.accelerator.distributed_type == DistributedType.FSDP:
            self.model, self.opt = self.accelerator.prepare(model, self.opt)
        else:
            self.model = shard_on_cpu(model, [self.opt])
            self.opt = self.accelerator.prepare(self.opt)

    def raw_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, float]]:
        return {"opt": (self.opt, self.tcfg.lr)}

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
        t, acc = self.tcfg, self.accelerator
        start = self.step * t.grad_accum
        flip = self.dcfg.random_flip
        for batch in shard_batches(
            self.shards, t.batch_size, t.seed, start, acc.process_index, acc.num_processes, flip
        ):
            yield tuple(x if x is None else x.to(acc.device) for x in batch)

    def train_step(self, micro: list[tuple]) -> tuple[dict[str, float], int]:
        t, acc = self.tcfg, self.accelerator
        self.opt.zero_grad(set_to_none=True)
        total, seen = 0.0, 0
        for ids, labels, lengths in micro:
            with acc.autocast():
                loss, _ = self.model(ids, labels, lengths)
            acc.backward(loss / len(micro))
            total += loss.item() / len(micro)
            seen += ids.shape[0] * ids.shape[1]
        logs = {"loss": total}
        if t.grad_clip > 0:
            logs["grad_norm"] = float(acc.clip_grad_norm_(self.model.parameters(), t.grad_clip))
        self.opt.step()
        return logs, seen

    def _tokenizer(self) -> Any:
        """The tokenizer that wrote the shards, or None (said once in the log) where it cannot be found."""
        if self._sample_tokenizer is None:
            import vtok

            where = self.shards.index.get("tokenizer")
            self._sample_tokenizer = False
            if where and Path(where, "config.json").is_file():
                tokenizer = vtok.load(where, map_location=self.accelerator.device)
                if tokenizer.fingerprint() == self.shards.index.get("tokenizer_hash"):
                    self._sample_tokenizer = tokenizer
            if not self._sample_tokenizer:
                log.warning("no sample grids: the tokenizer that wrote %s is not at %r", self.dcfg.source, where)
        return self._sample_tokenizer or None

    @torch.no_grad()
    def save_samples(self, count: int = 8) -> None:
        """One sample per class (the first ``count`` classes; ``count`` samples if unconditional), decoded."""
        tokenizer = self._tokenizer()
        if tokenizer is None:
            return
        model = self.released_model()
        classes = model.cfg.num_classes
        labels = torch.arange(min(count, classes), device=self.accelerator.device) if classes > 0 else None
        was_training = model.training
        tokens = generate(model, labels, None if classes > 0 else count, SamplingConfig(seed=self.tcfg.seed))
        model.train(was_training)
        images = tokenizer.decode(tokens.to(self.accelerator.device)).cpu()
        save_image(make_grid(images, ncol=len(images)), self.run / "samples" / f"step_{self.step:08d}.png")

    def finalize(self, final: Path) -> None:
        with atomic_path(final / "shards.json") as tmp:
            Path(tmp).write_text(json.dumps(self.shards.index, indent=1) + "\n")


def train_ar(cfg: dict[str, Any], run: str | Path, progress: bool = True) -> Path:
    """Train (or resume) the AR run described by the resolved ``cfg`` in folder ``run``."""
    return ARTrainer(cfg, run, progress).train()
