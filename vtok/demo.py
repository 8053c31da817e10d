"""``vtok demo``: train a small VQ tokenizer on the built-in photographs, then measure it on held-out crops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import vtok
from vtok.builtin import builtin_crops
from vtok.errors import VtokError
from vtok.images import make_grid, pil_to_tensor, save_image
from vtok.io import atomic_path
from vtok.pipeline import decode_batched, encode_batched
from vtok.stats import CodeUsage
from vtok.tokens import save_tokens

DEMO_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tokenizer" / "vq_demo.yaml"


def demo_config_path() -> Path:
    """The demo preset in the repository's ``configs/`` (vtok is installed editable from its checkout)."""
    if not DEMO_CONFIG.is_file():
        raise VtokError(
            f"demo preset not found at {DEMO_CONFIG}; run vtok demo from an editable install (pip install -e .)"
        )
    return DEMO_CONFIG


def evaluate_heldout(tokenizer: vtok.Tokenizer, image_size: int, progress: bool = True) -> dict[str, Any]:
    """PSNR and codebook statistics of ``tokenizer`` on the built-in held-out crops."""
    from vtok.eval import PSNR

    crops = builtin_crops("heldout", image_size)
    images = torch.stack([pil_to_tensor(im) for _, im in crops])
    tokens = encode_batched(tokenizer, images, progress=progress)
    recon = decode_batched(tokenizer, tokens, progress=progress)
    psnr = PSNR()
    psnr.update(images, recon)
    usage = CodeUsage(tokens.codebook_sizes)
    usage.update(tokens.ids)
    stats = usage.compute()[0]
    return {
        "images": len(crops),
        "image_size": image_size,
        "psnr": psnr.compute()["PSNR"],
        "codebook_usage": stats["usage"],
        "perplexity": stats["perplexity"],
        "tokens_per_image": tokens.num_positions,
        "_images": images,
        "_recon": recon,
        "_tokens": tokens,
        "_names": [n for n, _ in crops],
    }


def run_demo(out: str | Path, overrides: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the demo tokenizer in ``out/run`` and write ``out/heldout.png``,
    ``out/heldout_tokens.safetensors`` and ``out/results.json``; returns the results."""
    from vtok.tokenizers.train import train_tokenizer

    out = Path(out)
    cfg = vtok.load_config(demo_config_path(), overrides or [])
    final = train_tokenizer(cfg, out / "run", progress=progress)
    tokenizer = vtok.load(final)
    result = evaluate_heldout(tokenizer, cfg["data"]["image_size"], progress)
    images, recon, tokens, names = (result.pop(k) for k in ("_images", "_recon", "_tokens", "_names"))
    show = torch.cat([images[::6][:8], recon[::6][:8]])
    save_image(make_grid(show, ncol=min(8, len(images[::6]))), out / "heldout.png")
    save_tokens(out / "heldout_tokens.safetensors", tokens, tokenizer.fingerprint(), names=names)
    result.update(
        protocol={
            "data": "built-in held-out crops (photographs chelsea, flower, rocket, coins; 13 windows each)",
            "psnr": "per image on 8-bit [0, 1] RGB, then averaged",
            "codebook": "ids of all held-out crops; usage = distinct ids / codebook size; perplexity = 2^entropy",
        },
        model=str(final),
        train_steps=cfg["train"]["steps"],
    )
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result
