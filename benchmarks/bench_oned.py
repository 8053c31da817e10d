"""A trained 1D tokenizer on the held-out built-in crops: rate-distortion, adaptive length, bytes against JPEG/WebP.

    python benchmarks/bench_oned.py --tokenizer runs/oned_demo/final [--size 64] [--target psnr=18]
                                   [--out benchmarks/oned_demo.json] [--plot benchmarks/figures/oned_demo_rd.png]

1. PSNR and SSIM of the 52 held-out crops decoded from the first k tokens, k = 1, 2, 4, ..., N
   (LPIPS is skipped where its weights are missing).
2. Adaptive length for ``--target``: share of images meeting it, and mean tokens on plain images (flat
   grey levels) against busy ones (the held-out crops). Also the wall time against one fixed-length encode.
3. Compression (One-D-Piece's comparison): per image, the tokens' bytes (k x log2(codebook) / 8) at full
   length against the smallest JPEG and WebP files (PIL, quality searched) with at least the same PSNR.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import platform
import time
from pathlib import Path

import torch
from PIL import Image
from vtok.eval.psnr import psnr_per_image
from vtok.eval.rate import rate_distortion, write_rate_distortion
from vtok.tokenizers.adaptive import TARGETS, encode_adaptive, parse_target

import vtok
from vtok.builtin import builtin_crops
from vtok.images import pil_to_tensor, tensor_to_pil

ROOT = Path(__file__).resolve().parent.parent


def smallest_file(image: Image.Image, min_psnr: float, fmt: str) -> int | None:
    """Bytes of the smallest ``fmt`` file (quality 1..100) whose decode has PSNR >= min_psnr."""
    x = pil_to_tensor(image)[None]
    lo, hi, best = 1, 100, None
    while lo <= hi:  # PSNR grows with quality: binary search for the lowest quality that suffices
        q = (lo + hi) // 2
        buf = io.BytesIO()
        image.save(buf, format=fmt, quality=q)
        decoded = pil_to_tensor(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))[None]
        if float(psnr_per_image(x, decoded)[0]) >= min_psnr:
            best, hi = len(buf.getvalue()), q - 1
        else:
            lo = q + 1
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--target", default="psnr=18")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "oned_demo.json"))
    p.add_argument("--plot", default=str(ROOT / "benchmarks" / "figures"))
    args = p.parse_args()
    tok = vtok.load(args.tokenizer).eval()
    n = tok.num_tokens
    budgets = [2**i for i in range(int(math.log2(n)) + 1)]
    rows = rate_distortion(tok, budgets, ["psnr", "ssim", "lpips"], resolution=args.size, progress=False)
    write_rate_distortion(rows, args.plot, f"{Path(args.tokenizer).parent.name}: held-out built-in crops")
    for r in rows:
        print(json.dumps(r), flush=True)

    busy = torch.stack([pil_to_tensor(im) for _, im in builtin_crops("heldout", args.size)])
    plain = torch.zeros(12, 3, args.size, args.size) + torch.linspace(-0.8, 0.8, 12)[:, None, None, None]
    with torch.inference_mode():
        t0 = time.perf_counter()
        tok.encode(busy)
        fixed = time.perf_counter() - t0
        t0 = time.perf_counter()
        res_busy = encode_adaptive(tok, busy, args.target)
        adaptive = time.perf_counter() - t0
        res_plain = encode_adaptive(tok, plain, args.target)
        # The search misses only where all N tokens miss too: count those images apart.
        name, threshold = parse_target(args.target)
        recon = tok.decode(tok.encode(busy))  # all N tokens; reused for the compression comparison
        full_scores = TARGETS[name][0](busy, recon).cpu()
        reachable = full_scores >= threshold if TARGETS[name][1] else full_scores <= threshold
    adaptive_row = {
        "target": args.target,
        "busy_reachable_with_all_tokens": float(reachable.float().mean()),
        "busy_met_where_reachable": float(res_busy.met[reachable].float().mean()) if bool(reachable.any()) else None,
        "busy_mean_tokens_where_reachable": float(res_busy.tokens.lengths[reachable].float().mean())
        if bool(reachable.any())
        else None,
        "busy_met": float(res_busy.met.float().mean()),
        "busy_mean_tokens": float(res_busy.tokens.lengths.float().mean()),
        "plain_met": float(res_plain.met.float().mean()),
        "plain_mean_tokens": float(res_plain.tokens.lengths.float().mean()),
        "search_decodes": res_busy.decodes,
        "search_seconds_over_fixed_encode": adaptive / fixed,
    }
    print(json.dumps(adaptive_row), flush=True)

    bits = math.log2(tok.codebook_sizes[0])
    psnrs = psnr_per_image(busy, recon)
    compression = {"tokens_bytes": [], "jpeg_bytes": [], "webp_bytes": [], "psnr": []}
    for x, y in zip(busy, psnrs, strict=True):
        image = tensor_to_pil(x)
        compression["tokens_bytes"].append(n * bits / 8)
        compression["jpeg_bytes"].append(smallest_file(image, float(y), "JPEG"))
        compression["webp_bytes"].append(smallest_file(image, float(y), "WEBP"))
        compression["psnr"].append(float(y))
    summary = {k: sum(v) / len(v) for k, v in compression.items() if None not in v}
    print(json.dumps(summary), flush=True)
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "tokenizer": args.tokenizer,
        "images": len(busy),
        "rate_distortion": rows,
        "adaptive": adaptive_row,
        "compression_mean": summary,
    }
    Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
