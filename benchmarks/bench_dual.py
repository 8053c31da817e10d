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
from common import ROOT, crop_splits, psnr_cell
from einops import rearrange

import vtok
from vtok.eval import SSIM
from vtok.eval.heldout import mean_psnr, reconstruct
from vtok.tokenizers.dual import DualTokenizer


@torch.no_grad()
def score(tokenizer: vtok.Tokenizer, splits: dict[str, torch.Tensor]) -> dict[str, float]:
    row: dict[str, float] = {}
    for split, images in splits.items():
        rec = reconstruct(tokenizer, images)
        tokens, recon = rec.tokens, rec.recon
        row[f"{split}_psnr"] = psnr_cell(rec)
        if tokenizer.quantizer.prefix_decodable:  # residual levels: decode from every first d
            for d in range(1, len(tokens.codebook_sizes)):
                row[f"{split}_psnr_depth{d}"] = round(mean_psnr(images, tokenizer.decode(tokens.levels(d))), 3)
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
    splits = crop_splits(args.size)
    results = {}
    for path in args.tokenizers:
        results[path] = score(vtok.load(path).eval(), splits)
        print(path, results[path], flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
