"""A trained 1D tokenizer on the held-out built-in crops: rate-distortion, adaptive length, bytes against JPEG/WebP.

    python benchmarks/bench_oned.py --tokenizer runs/oned_demo/final [--size 64] [--target psnr=18]
                                   [--out benchmarks/oned_demo.json] [--plot benchmarks/figures/oned_demo]

1. PSNR and SSIM of the 52 held-out crops decoded from the first k tokens, k = 1, 2, 4, ..., N
   (LPIPS is skipped where its weights are missing).
2. Adaptive length for ``--target``: share of images meeting it and mean tokens chosen, for the
   held-out crops split into thirds by detail (JPEG size at quality 75, a codec's measure of how
   much there is to encode: plain, middle, busy) and for flat grey images, which no built-in
   photograph is. Also the wall time against one fixed-length encode.
   ``--plot`` also gets ``prefix_grid.png``: held-out crops from the plainest to the busiest
   (rows), the original then the decode of the first 1, 2, 4, ..., N tokens (columns).
3. Compression (One-D-Piece's comparison): per image, the tokens' bytes (k x log2(codebook) / 8) at full
   length against the smallest JPEG and WebP files (PIL, quality searched) with at least the same PSNR.
4. The classic codecs at no more bits than the full sequence (``--classic-preset``: the data of the
   tokenizer's training, 1024 images of its stream): residual k-means of raw 16x16 patches on the nearest
   square grid (4x4 at 64 px), one level (half the bits) and two, JPEG and WebP at the same bytes.
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
from common import ROOT, crop_splits
from PIL import Image

import vtok
from vtok.eval.adaptive import TARGETS, encode_adaptive, meets, parse_target
from vtok.eval.baselines import classic_scores, encoded, training_stream
from vtok.eval.heldout import crops
from vtok.eval.psnr import psnr_per_image
from vtok.eval.rate import rate_distortion, write_rate_distortion
from vtok.images import make_grid, pil_to_tensor, save_image, tensor_to_pil


def smallest_file(image: Image.Image, min_psnr: float, fmt: str) -> int | None:
    """Bytes of the smallest ``fmt`` file (quality 1..100) whose decode has PSNR >= min_psnr."""
    x = pil_to_tensor(image)[None]
    lo, hi, best = 1, 100, None
    while lo <= hi:  # PSNR grows with quality: binary search for the lowest quality that suffices
        q = (lo + hi) // 2
        data = encoded(image, fmt, q)
        decoded = pil_to_tensor(Image.open(io.BytesIO(data)).convert("RGB"))[None]
        if float(psnr_per_image(x, decoded)[0]) >= min_psnr:
            best, hi = len(data), q - 1
        else:
            lo = q + 1
    return best


def jpeg_bytes(images: torch.Tensor, quality: int = 75) -> torch.Tensor:
    """(B,) JPEG file size of each image at ``quality``: few bytes for plain images, many for busy ones."""
    return torch.tensor([len(encoded(tensor_to_pil(x), "JPEG", quality)) for x in images], dtype=torch.float)


def prefix_grid(tok, images: torch.Tensor, budgets: list[int], path: Path) -> None:
    """Rows: ``images``; columns: the original, then the decode of each prefix length in ``budgets``."""
    columns = [images] + [tok.decode(tok.encode(images, num_tokens=k)) for k in budgets]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # (rows * (1 + len(budgets)), 3, H, W)
    save_image(make_grid(tiles, ncol=len(columns)), path)


def full_length(tok, images: torch.Tensor, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decodes from all N tokens (B, 3, H, W) and whether each meets ``target`` (B,) bool."""
    name, threshold = parse_target(target)
    recon = tok.decode(tok.encode(images))
    return recon, meets(name, threshold, TARGETS[name][0](images, recon).cpu())


def summarise(res, reachable: torch.Tensor, select: torch.Tensor) -> dict[str, float | int | None]:
    """Met share and mean chosen length over the images in ``select``, and over those of them that all
    N tokens bring to the target (the search cannot do better than the full sequence)."""
    both = select & reachable
    lengths = res.tokens.lengths.float()
    return {
        "images": int(select.sum()),
        "met": float(res.met[select].float().mean()),
        "mean_tokens": float(lengths[select].mean()),
        "reachable_with_all_tokens": float(reachable[select].float().mean()),
        "met_where_reachable": float(res.met[both].float().mean()) if bool(both.any()) else None,
        "mean_tokens_where_reachable": float(lengths[both].mean()) if bool(both.any()) else None,
    }


def classic(tok, preset: str, size: int) -> dict:
    """The classic codecs at no more bits than the tokenizer's full sequence, on its training stream's images."""
    stream = training_stream(vtok.load_config(preset)["data"], seed=0)
    splits = crop_splits(size)
    bits = tok.num_tokens * math.log2(tok.codebook_sizes[0])
    side = max(s for s in range(1, size + 1) if size % s == 0 and s * s * math.log2(tok.codebook_sizes[0]) <= bits)
    depth = max(1, int(bits // (side * side * math.log2(tok.codebook_sizes[0]))))
    return {
        "token_bits": bits,
        "grid": side,
        **classic_scores(size // side, tok.codebook_sizes[0], depth, stream, splits),
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--target", default="psnr=18")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "oned_demo.json"))
    p.add_argument("--plot", default=str(ROOT / "benchmarks" / "figures" / "oned_demo"))  # a folder
    p.add_argument("--classic-preset", default=str(ROOT / "configs" / "tokenizer" / "oned_demo.yaml"))
    args = p.parse_args()
    tok = vtok.load(args.tokenizer).eval()
    n = tok.num_tokens
    budgets = [2**i for i in range(int(math.log2(n)) + 1)]
    rows = rate_distortion(tok, budgets, ["psnr", "ssim", "lpips"], resolution=args.size, progress=False)
    write_rate_distortion(rows, args.plot, f"{Path(args.tokenizer).parent.name}: held-out built-in crops")
    for r in rows:
        print(json.dumps(r), flush=True)

    held_out = crops("heldout", args.size)
    flat = torch.zeros(12, 3, args.size, args.size) + torch.linspace(-0.8, 0.8, 12)[:, None, None, None]
    with torch.inference_mode():
        t0 = time.perf_counter()
        tok.encode(held_out)
        fixed = time.perf_counter() - t0
        t0 = time.perf_counter()
        res_held = encode_adaptive(tok, held_out, args.target)
        adaptive = time.perf_counter() - t0
        res_flat = encode_adaptive(tok, flat, args.target)
        # The search can only miss where all N tokens miss too: count those images apart.
        recon, reachable = full_length(tok, held_out, args.target)  # recon reused for the compression comparison
        _, flat_reachable = full_length(tok, flat, args.target)
    # Thirds of the held-out crops by detail: the plainest, the middle and the busiest.
    busyness = jpeg_bytes(held_out)
    order = busyness.argsort()  # plainest first
    third = (order.argsort() * 3) // len(held_out)
    with torch.inference_mode():  # 8 crops evenly spaced from the plainest to the busiest
        picks = order[torch.linspace(0, len(held_out) - 1, 8).long()]
        prefix_grid(tok, held_out[picks], budgets, Path(args.plot) / "prefix_grid.png")
    adaptive_row = {
        "target": args.target,
        "held_out_all": summarise(res_held, reachable, torch.ones_like(reachable)),
        **{
            f"held_out_{label}": summarise(res_held, reachable, third == i)
            for i, label in enumerate(["plain_third", "middle_third", "busy_third"])
        },
        "jpeg_bytes_thirds_bounds": [float(busyness[third == i].max()) for i in range(2)],
        "flat_grey": summarise(res_flat, flat_reachable, torch.ones_like(flat_reachable)),
        "search_decodes": res_held.decodes,
        "search_seconds_over_fixed_encode": adaptive / fixed,
    }
    print(json.dumps(adaptive_row), flush=True)

    bits = math.log2(tok.codebook_sizes[0])
    psnrs = psnr_per_image(held_out, recon)
    compression = {"tokens_bytes": [], "jpeg_bytes": [], "webp_bytes": [], "psnr": []}
    for x, y in zip(held_out, psnrs, strict=True):
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
        "images": len(held_out),
        "rate_distortion": rows,
        "adaptive": adaptive_row,
        "compression_mean": summary,
        "classic": classic(tok, args.classic_preset, args.size),
    }
    print(json.dumps(report["classic"]), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
