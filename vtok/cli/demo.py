"""``vtok demo``: train a small VQ tokenizer on the built-in photographs, then measure it on held-out crops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

import vtok
from vtok.catalog import find
from vtok.images import make_grid, save_image
from vtok.io import atomic_path, dumps_json
from vtok.stats import CodeUsage, usage_verdict
from vtok.tokens import save_tokens

DEMO_PRESET = "vq_demo"  # packaged with vtok (vtok.catalog), so the demo runs from a wheel too


def evaluate_heldout(tokenizer: vtok.Tokenizer, image_size: int, progress: bool = True) -> dict[str, Any]:
    """PSNR, colour error and codebook statistics of ``tokenizer`` on the built-in held-out crops."""
    from vtok.eval.heldout import named_crops, reconstruct

    names, images = named_crops("heldout", image_size)
    held = reconstruct(tokenizer, images, progress=progress)
    usage = CodeUsage(held.tokens.codebook_sizes)
    usage.update(held.tokens.ids)
    stats = usage.compute()[0]
    return {
        "images": len(names),
        "image_size": image_size,
        "psnr": held.psnr(),
        "color_error": [round(float(e), 4) for e in held.color_error()],
        "codebook_usage": stats["usage"],
        "codebook": usage_verdict(stats["usage"]),
        "perplexity": stats["perplexity"],
        "tokens_per_image": held.tokens.num_positions,
        "_images": images,
        "_recon": held.recon,
        "_tokens": held.tokens,
        "_names": names,
    }


def classic_baseline(cfg: dict[str, Any], tokenizer: vtok.Tokenizer, images: torch.Tensor) -> dict[str, Any]:
    """k-means VQ of raw patches at the tokenizer's tokens and codebook, fitted on 1024 images of its
    training stream, on the same held-out crops: the score the tokenizer is read against."""
    from vtok.eval.baselines import classic_vq_scores, training_stream

    stream = training_stream(cfg["data"], cfg["train"]["seed"])
    sizes = tokenizer.codebook_sizes
    row = classic_vq_scores(tokenizer.downsample_factor, sizes[0], len(sizes), stream, {"heldout": images})
    return {
        "psnr": row["classic_vq"]["heldout"],
        "bits_per_image": row["classic_vq"]["bits"],
        "protocol": "k-means (scikit-learn, k-means++) over raw patches of the tokenizer's downsampling factor, "
        "one centroid per code, fitted on 1024 images of the training stream; same held-out crops",
    }


def run_demo(out: str | Path, overrides: list[str] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) the demo tokenizer in ``out/run`` and write ``out/heldout.png``,
    ``out/heldout_tokens.safetensors`` and ``out/results.json``; returns the results."""
    from vtok.tokenizers.train import train_tokenizer

    out = Path(out)
    cfg = vtok.load_config(find(DEMO_PRESET).read(), overrides or [])
    final = train_tokenizer(cfg, out / "run", progress=progress)
    tokenizer = vtok.load(final)
    result = evaluate_heldout(tokenizer, cfg["data"]["image_size"], progress)
    images, recon, tokens, names = (result.pop(k) for k in ("_images", "_recon", "_tokens", "_names"))
    result["classic_vq"] = classic_baseline(cfg, tokenizer, images)
    result["psnr_over_classic_vq"] = result["psnr"] - result["classic_vq"]["psnr"]
    # Every held-out crop: originals above reconstructions, one photograph's 13 crops per pair of rows.
    rows = [torch.cat([images[i : i + 13], recon[i : i + 13]]) for i in range(0, len(images), 13)]
    save_image(make_grid(torch.cat(rows), ncol=13), out / "heldout.png")
    save_tokens(out / "heldout_tokens.safetensors", tokens, tokenizer.fingerprint(), names=names)
    result.update(
        protocol={
            "data": "built-in held-out crops (photographs chelsea, flower, rocket, coins; 13 windows each)",
            "psnr": "per image on 8-bit [0, 1] RGB, then averaged",
            "color_error": "mean of reconstruction - original per channel (R, G, B), [-1, 1] units",
            "codebook": "ids of all held-out crops; usage = distinct ids / codebook size; perplexity = 2^entropy",
        },
        model=str(final),
        train_steps=cfg["train"]["steps"],
    )
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(dumps_json(result, indent=2) + "\n")
    return result
