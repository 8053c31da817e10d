"""The VQGAN objective: pixel + perceptual + quantizer losses, and a hinge PatchGAN after disc_start."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vtok.config import DECAY, NON_NEGATIVE, build_component, component, ranged
from vtok.fast import full_precision
from vtok.interfaces import TokenizerOutput
from vtok.registry import register


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


@register("loss", "vqgan")
class VQGANLoss(nn.Module):
    """Generator and discriminator losses of VQGAN / LlamaGen, computed in float32.

    Generator: l1 * |x - x'| + l2 * (x - x')^2 + perceptual + codebook * quantizer
    losses + the regulariser's (if any) + (after ``disc_start``) adaptive-or-fixed weight * -D(x'). Discriminator:
    hinge loss plus an optional LeCam regulariser (Tseng et al. 2021) whose EMA
    anchors are averaged over ranks.
    """

    @dataclass
    class Config:
        l1_weight: float = ranged(1.0, NON_NEGATIVE)  # weight of the mean absolute pixel error (images in [-1, 1])
        l2_weight: float = ranged(0.0, NON_NEGATIVE)  # weight of the mean squared pixel error
        # Weight of the perceptual distance; 0 also skips building the perceptual network
        perceptual_weight: float = ranged(1.0, NON_NEGATIVE)
        # The network behind the perceptual distance (a perceptual part)
        perceptual: dict = component("perceptual", {"name": "effnet_lite0"})
        # Weight of the sum of the quantizer's own losses (commitment, entropy, ...; logged as q_*)
        codebook_weight: float = ranged(1.0, NON_NEGATIVE)
        # The GAN discriminator (trained with disc_lr from disc_start on)
        discriminator: dict = component("discriminator", {"name": "patchgan"})
        # Weight of the generator's GAN term -D(x'); 0: no GAN (the discriminator never trains)
        disc_weight: float = ranged(0.5, NON_NEGATIVE)
        disc_start: int = ranged(20000, NON_NEGATIVE)
        # The generator's GAN weight ramps from 0 over these steps after disc_start, so a discriminator trained
        # from scratch (e.g. when fine-tuning a released generator) is not followed while it is still random.
        disc_warmup_steps: int = ranged(0, NON_NEGATIVE)
        # Scale the GAN term so its gradient at the decoder's last layer matches the reconstruction's (taming's VQGAN)
        adaptive_weight: bool = False
        # Weight of the LeCam regulariser on the discriminator's logits (Tseng et al. 2021); 0: off
        lecam_weight: float = ranged(0.0, NON_NEGATIVE)
        # EMA decay of the LeCam anchors (the running mean logits on real and reconstructed images)
        lecam_decay: float = ranged(0.999, DECAY)
        # A teacher alignment of the tokenizer's features (``semantic``: GigaTok's / VA-VAE's), or none.
        regularizer: dict | None = component("regularizer", optional=True)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.perceptual = (
            build_component("perceptual", cfg.perceptual, "loss.perceptual") if cfg.perceptual_weight > 0 else None
        )
        self.discriminator = build_component("discriminator", cfg.discriminator, "loss.discriminator")
        self.regularizer = (
            build_component("regularizer", cfg.regularizer, "loss.regularizer") if cfg.regularizer else None
        )
        self.regularizer_proj: nn.Module | None = None  # the projection as the trainer prepared it (DDP)
        self.register_buffer("lecam_real", torch.zeros(()))
        self.register_buffer("lecam_fake", torch.zeros(()))

    def gan_active(self, step: int) -> bool:
        return self.cfg.disc_weight > 0 and step >= self.cfg.disc_start

    def generator_loss(
        self, images: torch.Tensor, out: TokenizerOutput, step: int, last_layer: torch.Tensor, discriminator: nn.Module
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss and its parts. ``discriminator`` may be the DDP-wrapped one."""
        with full_precision(images.device):
            x, recon = images.float(), out.recon.float()
            rec = self.cfg.l1_weight * (x - recon).abs().mean() + self.cfg.l2_weight * (x - recon).pow(2).mean()
            nll = rec
            logs = {"rec": rec.item()}
            if self.perceptual is not None:
                p = self.perceptual(x, recon).mean()
                nll = nll + self.cfg.perceptual_weight * p
                logs["perceptual"] = p.item()
            q = sum(out.losses.values(), torch.zeros((), device=x.device))
            logs.update({f"q_{k}": v.item() for k, v in out.losses.items()})
            total = nll + self.cfg.codebook_weight * q
            if self.regularizer is not None:
                reg, reg_logs = self.regularizer(x, self.regularizer_proj)
                total = total + reg
                logs.update(reg_logs)
            if self.gan_active(step):
                g = -discriminator(recon).float().mean()
                weight = self.cfg.disc_weight
                if self.cfg.disc_warmup_steps > 0:
                    weight = weight * min(1.0, (step - self.cfg.disc_start + 1) / self.cfg.disc_warmup_steps)
                if self.cfg.adaptive_weight:
                    weight = weight * self._adaptive_weight(nll, g, last_layer)
                total = total + weight * g
                logs.update({"g": g.item(), "g_weight": float(weight)})
        logs["total"] = total.item()
        return total, logs

    @staticmethod
    def _adaptive_weight(nll: torch.Tensor, g: torch.Tensor, last_layer: torch.Tensor) -> float:
        # taming's balance: make the GAN gradient at the decoder's last layer as large as the reconstruction's.
        nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
        g_grad = torch.autograd.grad(g, last_layer, retain_graph=True)[0]
        return float((nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4))

    def discriminator_loss(
        self, images: torch.Tensor, recon: torch.Tensor, discriminator: nn.Module
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss (+ LeCam) for the discriminator on real images and detached reconstructions."""
        with full_precision(images.device):
            logits = discriminator(torch.cat([images.float(), recon.detach().float()])).float()
            real, fake = logits.chunk(2)
            loss = hinge_d_loss(real, fake)
            logs = {"d": loss.item(), "logits_real": real.mean().item(), "logits_fake": fake.mean().item()}
            if self.cfg.lecam_weight > 0:
                means = torch.stack([real.mean(), fake.mean()]).detach()
                if torch.distributed.is_available() and torch.distributed.is_initialized():
                    torch.distributed.all_reduce(means)
                    means /= torch.distributed.get_world_size()
                d = self.cfg.lecam_decay
                self.lecam_real.mul_(d).add_((1 - d) * means[0])
                self.lecam_fake.mul_(d).add_((1 - d) * means[1])
                reg = F.relu(real - self.lecam_fake).pow(2).mean() + F.relu(self.lecam_real - fake).pow(2).mean()
                loss = loss + self.cfg.lecam_weight * reg
                logs["lecam"] = reg.item()
        return loss, logs
