"""Tokenizer training on accelerate: one CPU to many GPUs and nodes (``accelerate launch``).

Generator and PatchGAN discriminator alternate each step once ``disc_start`` is
reached. The run folder, resume and cadence are :class:`vtok.training.Trainer`'s;
this module adds the loss, the two optimisers, the image batches, one GAN step,
codebook statistics over the logging window and held-out reconstruction grids.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from vtok.config import build_component
from vtok.data import iterate_batches, make_dataset
from vtok.errors import VtokError
from vtok.images import make_grid, save_image
from vtok.registry import register
from vtok.stats import CodeUsage
from vtok.training import Trainer

log = logging.getLogger("vtok.train")


def _lossless_state(loss_fn: torch.nn.Module) -> torch.nn.Module:
    """The part of the loss with training state (discriminator, LeCam anchors), without the frozen perceptual net."""
    keep = torch.nn.Module()
    keep.discriminator = loss_fn.discriminator
    keep.register_buffer("lecam_real", loss_fn.lecam_real)
    keep.register_buffer("lecam_fake", loss_fn.lecam_fake)
    if loss_fn.regularizer is not None:
        keep.regularizer_proj = loss_fn.regularizer.proj
    return keep


def collapse_reading(levels: list[dict[str, float]], sizes: tuple[int, ...]) -> tuple[float, float]:
    """(window usage, perplexity floor) of a logging window, from :meth:`CodeUsage.compute`'s per-level rows.

    Collapse is judged on the worst level, each against as many codes as the window's tokens
    could have used, so small batches do not read as collapse. A level no token of the window
    reached (quantize dropout stopped every step of the window above it) has nothing to judge and
    is left out: counted, it read as 0% usage and a perplexity of 1 whenever dropout removed it.
    """
    seen = [(lv, size) for lv, size in zip(levels, sizes) if lv["count"] > 0]
    if not seen:
        return 0.0, 0.0
    usage = min(lv["distinct"] / max(1.0, min(size, lv["count"])) for lv, size in seen)
    return usage, min(lv["perplexity"] for lv, _ in seen)


@register("trainer", "tokenizer")
class TokenizerTrainer(Trainer):
    """The model, loss, generator and discriminator optimisers of one tokenizer run."""

    def build(self) -> torch.nn.Module:
        if self.cfg.get("loss") is None:
            raise VtokError("a tokenizer run needs a 'loss' section (e.g. name: vqgan)")
        t = self.tcfg
        model = build_component("model", self.cfg["model"], "model")
        self.loss_fn = build_component("loss", self.cfg["loss"], "loss").to(self.accelerator.device)
        self.disc = self.loss_fn.discriminator
        adamw = dict(betas=tuple(t.betas), weight_decay=t.weight_decay)
        params = self.trainable(model)
        reg = self.loss_fn.regularizer
        if reg is not None:
            reg.attach(model)
            reg.proj.to(self.accelerator.device)
            params += list(reg.proj.parameters())
        self.opt_g = torch.optim.AdamW(params, lr=t.lr, **adamw)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=t.disc_lr, **adamw)
        self.usage = CodeUsage(model.codebook_sizes)
        return model

    @torch.no_grad()
    def initialise_from(self, model: torch.nn.Module) -> None:
        super().initialise_from(model)
        if not self.tcfg.reinit_unused_codes:
            return
        # The latents of the first 8 batches of the new data (the data order is a function of seed and step,
        # so every rank sees the same batches and computes the same centroids).
        batches = iterate_batches(self.dcfg, self.tcfg.batch_size, self.tcfg.seed + 1)
        images = torch.cat([next(batches) for _ in range(8)])
        model.eval()
        refreshed = model.quantizer.refresh_unused(model.quantizer_inputs(images))
        model.train()
        log.warning("reinit_unused_codes: %d codes unused on %d new images restarted there", refreshed, len(images))

    @torch.no_grad()
    def initialise_fresh(self, model: torch.nn.Module) -> None:
        """Hand the model the first images of its own training stream if it initialises from data (the order is a
        function of the seed, so every rank computes the same weights)."""
        if not model.data_init_images:
            return
        batches = iterate_batches(self.dcfg, self.tcfg.batch_size, self.tcfg.seed + 1)
        count = -(-model.data_init_images // self.tcfg.batch_size)
        model.init_from_data(torch.cat([next(batches) for _ in range(count)]))

    def prepare_others(self) -> None:
        self.disc, self.opt_g, self.opt_d = self.accelerator.prepare(self.disc, self.opt_g, self.opt_d)
        if self.loss_fn.regularizer is not None:  # its gradients are averaged over ranks like the model's
            self.loss_fn.regularizer_proj = self.accelerator.prepare(self.loss_fn.regularizer.proj)

    def checkpoint_modules(self, model: torch.nn.Module) -> dict[str, torch.nn.Module]:
        return {"model": model, "loss": _lossless_state(self.loss_fn)}

    def raw_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, float]]:
        return {"opt_g": (self.opt_g, self.tcfg.lr), "opt_d": (self.opt_d, self.tcfg.disc_lr)}

    def batches(self) -> Iterator[torch.Tensor]:
        t, acc = self.tcfg, self.accelerator
        start = self.step * t.grad_accum
        for batch in iterate_batches(self.dcfg, t.batch_size, t.seed, start, acc.process_index, acc.num_processes):
            yield batch.to(acc.device)

    def train_step(self, micro: list[torch.Tensor]) -> tuple[dict[str, float], int]:
        t, acc = self.tcfg, self.accelerator
        gan = self.loss_fn.gan_active(self.step)
        self.opt_g.zero_grad(set_to_none=True)
        last_layer = acc.unwrap_model(self.model).last_layer
        recons, logs = [], {}
        for i, x in enumerate(micro):
            sync = acc.no_sync(self.model) if i < len(micro) - 1 else contextlib.nullcontext()
            with sync, acc.autocast():
                out = self.model(x)
                loss, logs = self.loss_fn.generator_loss(x, out, self.step, last_layer, self.disc)
                acc.backward(loss / len(micro))
            self.usage.update(out.tokens.ids)
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
        return logs, sum(len(x) for x in micro)

    def window_stats(self) -> dict[str, Any]:
        levels = self.usage.compute()
        self.usage.reset()
        window_usage, floor = collapse_reading(levels, self.usage.codebook_sizes)
        # The first codebook (level) as before.
        stats: dict[str, Any] = {"codebook_usage": levels[0]["usage"], "perplexity": levels[0]["perplexity"]}
        stats["window_usage"] = window_usage
        t = self.tcfg
        if self.step > t.warmup_steps and levels[0]["count"] > 0:
            stats["collapse"] = window_usage < t.collapse_usage or floor < t.collapse_perplexity
        return stats

    def on_logged(self, record: dict[str, Any]) -> None:
        if not record.get("collapse"):
            return
        t = self.tcfg
        message = (
            f"codebook collapse at step {self.step}: {record['window_usage']:.1%} of the codes the window could use "
            f"are in use (alarm under {t.collapse_usage:.0%}), perplexity {record['perplexity']:.1f}"
        )
        if t.stop_on_collapse:
            raise VtokError(message + "; stopped (train.stop_on_collapse), the last checkpoint is intact")
        log.warning(message)

    @torch.no_grad()
    def save_samples(self, count: int = 8) -> None:
        """Held-out originals (top) over their reconstructions (bottom) in ``samples/``."""
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
