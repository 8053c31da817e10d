"""Trained tokenizers on the built-in crops: PSNR on the training and held-out crops, held-out SSIM, for
dual-codebook tokenizers the cosine of ``semantic_features(tokens)`` to the teacher's features, and for
residual tokenizers the PSNR decoded from every first d levels.

    python benchmarks/bench_dual.py RUN/final [RUN/final ...] [--size 64] [--out benchmarks/dual_seeds.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

import vtok
from vtok.builtin import builtin_crops
from vtok.eval import PSNR, SSIM
from vtok.images import pil_to_tensor
from vtok.tokenizers.dual import DualTokenizer

ROOT = Path(__file__).resolve().parent.parent


@torch.no_grad()
def score(tokenizer: vtok.Tokenizer, splits: dict[str, torch.Tensor]) -> dict[str, float]:
    row: dict[str, float] = {}
    for split, images in splits.items():
        tokens = tokenizer.encode(images)
        recon = tokenizer.decode(tokens)
        psnr = PSNR()
        psnr.update(images, recon)
        row[f"{split}_psnr"] = round(psnr.compute()["PSNR"], 3)
        if tokenizer.quantizer.prefix_decodable:  # residual levels: decode from every first d
            for d in range(1, len(tokens.codebook_sizes)):
                partial = PSNR()
                partial.update(images, tokenizer.decode(tokens.levels(d)))
                row[f"{split}_psnr_depth{d}"] = round(partial.compute()["PSNR"], 3)
        if split != "heldout":
            continue
        ssim = SSIM()
        ssim.update(images, recon)
        row["heldout_ssim"] = round(ssim.compute()["SSIM"], 4)
        if isinstance(tokenizer, DualTokenizer):
            teacher = rearrange(tokenizer.teacher_features(images, tokens.grid), "b c h w -> b (h w) c")
            cosine = F.cosine_similarity(tokenizer.semantic_features(tokens), teacher, dim=-1).mean()
            row["semantic_cosine"] = round(float(cosine), 4)
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("tokenizers", nargs="+")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "dual_seeds.json"))
    args = p.parse_args()
    splits = {
        s: torch.stack([pil_to_tensor(im) for _, im in builtin_crops(s, args.size)]) for s in ("train", "heldout")
    }
    results = {}
    for path in args.tokenizers:
        results[path] = score(vtok.load(path).eval(), splits)
        print(path, results[path], flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
