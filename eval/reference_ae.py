"""A continuous autoencoder as a leaderboard's reference row: diffusers' ``AutoencoderKL`` by folder or Hub id.

Its latents are floats, so it has no bits per image: it shows what the same metrics read
for a continuous latent space (Stable Diffusion's VAE, for instance), the ceiling a discrete
tokenizer at that downsampling approaches.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from vtok.errors import VtokError, one_line


def load_autoencoder_kl(source: str, device: str = "cpu") -> Any:
    """diffusers ``AutoencoderKL.from_pretrained(source)`` in eval mode on ``device``; one line when it cannot
    be loaded (diffusers missing, no such folder, the Hub unreachable offline, another model's files)."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise VtokError("--reference-ae needs diffusers: pip install diffusers") from None
    if Path(source).exists() and not (Path(source) / "config.json").is_file():
        raise VtokError(f"--reference-ae {source} holds no config.json of a diffusers AutoencoderKL")
    try:
        # The Hub client's deprecation notes and diffusers' own log lines are noise before a one-line error.
        # Its modules log through child loggers of "diffusers": raising that logger's level silences them all.
        library_log = logging.getLogger("diffusers")
        level = library_log.level
        library_log.setLevel(logging.CRITICAL + 1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = AutoencoderKL.from_pretrained(source)
        finally:
            library_log.setLevel(level)
    except Exception as err:  # diffusers raises OSError, ValueError, EnvironmentError, HF errors: all one line here
        text = str(err).strip().splitlines()
        why = one_line(text[0] if text else type(err).__name__)
        if not Path(source).exists() and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            why = f"no such folder, and the Hub is offline (HF_HUB_OFFLINE) with no cached copy: {why}"
        raise VtokError(f"--reference-ae {source}: cannot load an AutoencoderKL ({why})") from None
    return model.to(device).eval()


def autoencoder_reconstruct(model: Any) -> Any:
    """images (B, 3, H, W) in [-1, 1] -> decode(mode of the posterior), float32, clamped to [-1, 1].

    The posterior's mode, not a sample, so the row is deterministic.
    """
    device = next(model.parameters()).device
    factor = 2 ** (len(model.config.block_out_channels) - 1)

    @torch.inference_mode()
    def run(images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        if h % factor or w % factor:
            raise VtokError(f"the AutoencoderKL codes sides divisible by {factor}, got {w}x{h}")
        latents = model.encode(images.to(device)).latent_dist.mode()  # (B, C, H/f, W/f)
        return model.decode(latents).sample.float().clamp(-1, 1).to(images.device)

    return run


def autoencoder_fingerprint(model: Any) -> str:
    """sha256 over the model's config and weights: a leaderboard's cached reference row is reused only for the
    same model."""
    import hashlib

    digest = hashlib.sha256(str(sorted(model.config.items())).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def autoencoder_info(model: Any, source: str) -> dict[str, Any]:
    """What the reference row states about its latents."""
    cfg = model.config
    factor = 2 ** (len(cfg.block_out_channels) - 1)
    return {"source": source, "latent_channels": cfg.latent_channels, "downsampling": factor, "latents": "float"}
