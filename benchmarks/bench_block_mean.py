"""Reference points for the demo tables: PSNR of the built-in crops against their own g x g block means.

    python benchmarks/bench_block_mean.py [--size 64] [--out benchmarks/block_mean.json]

Each crop is average-pooled to g x g and upsampled back bilinearly: g = 1 is its mean
colour (3 numbers), g = 4 is 48 numbers. A tokenizer that scores below these has not yet
learned to carry more than a few average colours through its tokens.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from common import ROOT

from vtok.eval.heldout import crops, mean_psnr


def block_mean_psnr(images: torch.Tensor, grid: int) -> float:
    """images (B, 3, S, S) in [-1, 1] -> mean PSNR against their grid x grid block means, upsampled."""
    low = F.interpolate(F.adaptive_avg_pool2d(images, grid), size=images.shape[-2:], mode="bilinear")
    return mean_psnr(images, low.clamp(-1, 1))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "block_mean.json"))
    args = p.parse_args()
    grids = [g for g in (1, 2, 4, 8, 16) if g <= args.size]
    report = {}
    for split in ("train", "heldout"):
        images = crops(split, args.size)
        report[split] = {str(g): round(block_mean_psnr(images, g), 2) for g in grids}
    print("| crops | " + " | ".join(f"{g}x{g} means" for g in grids) + " |")
    print("|---|" + "---|" * len(grids))
    for split, row in report.items():
        print(f"| {split} | " + " | ".join(f"{v:.2f}" for v in row.values()) + " |")
    Path(args.out).write_text(json.dumps({"size": args.size, "psnr_db": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
