"""Lookup-free, binary and implicit codes against VQ at equal bits and equal budget, on the demo recipe.

    python benchmarks/bench_codes.py [--steps 800] [--rows vq,lfq,bsq,residual_lfq,fsq,simvq] [--seeds 0,1]
                                     [--work runs/codes] [--out benchmarks/codes.json]

Every row is ``vq_demo.yaml``'s network, data and optimiser (the recipe study's
budget: 800 steps x batch 16 x 64 px windows of the built-in photographs) with
another quantizer, all at 64 tokens of 10 bits (FSQ: 8x5x5x5 = 1000 codes, no
more bits). Scored on the 52 held-out crops: PSNR, codes in use (a position's
sub-codes joined into one code), the entropy of the code histogram, and for
the binary codes the bits in use (set between 1% and 99% of the time) and the
least balanced bit. Encode and decode are timed side by side, one model after
another in one process, on the 52 crops at batch 52 (median of 5 after a warm-up).
Runs are kept in ``--work`` and reused when run again.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from common import PRESETS, ROOT, color_error_cell, crop_splits, psnr_cell

import vtok
from vtok.eval.heldout import reconstruct
from vtok.tokenizers.quantizers.lfq import LFQ
from vtok.tokenizers.quantizers.residual_scalar import ResidualLFQ
from vtok.tokenizers.train import TokenizerTrainer

Q = "model.quantizer"

# name -> (what, preset, overrides)
ROWS: dict[str, tuple[str, str, list[str]]] = {
    "vq": ("vq: 1024 Euclidean codes of dim 8, EMA, k-means init, restarts (vq_demo)", "vq_demo.yaml", []),
    "lfq": ("lfq: 10 sign bits as 2 sub-codes of 5, entropy 0.02, commitment 0.05", "vq_lfq_demo.yaml", []),
    "bsq": ("bsq: lfq on the unit sphere, 2 sub-codes of 5 bits", "vq_bsq_demo.yaml", []),
    "residual_lfq": (
        "residual_lfq: 2 levels of 5 sign bits on 5 values (4 levels a value), entropy 0.02, commitment 0.05",
        "vq_lfq_demo.yaml",
        [f"{Q}={{name: residual_lfq, dim: 5, bits: 5, depth: 2, entropy_weight: 0.02, commitment_weight: 0.05}}"],
    ),
    "fsq": ("fsq: 8x5x5x5 levels (1000 codes)", "vq_demo.yaml", [f"{Q}={{name: fsq, dim: 8, levels: [8, 5, 5, 5]}}"]),
    "simvq": (
        "simvq: 1024 frozen random codes through a learned linear map",
        "vq_demo.yaml",
        [f"{Q}={{name: simvq, dim: 8, codebook_size: 1024}}"],
    ),
}

# The LFQ study (RESULTS.md): vq_lfq_demo with one change each. Not in the default rows.
LFQ_STUDY: dict[str, tuple[str, str, list[str]]] = {
    name: (what, preset, [override])
    for name, what, preset, override in [
        ("lfq_one_group", "one group of 10 bits", "vq_lfq_demo.yaml", f"{Q}.groups=1"),
        ("bsq_one_group", "bsq, one group of 10 bits", "vq_bsq_demo.yaml", f"{Q}.groups=1"),
        ("lfq_temperature_10", "entropy temperature 10", "vq_lfq_demo.yaml", f"{Q}.inv_temperature=10"),
        ("lfq_diversity_4", "diversity weight 4", "vq_lfq_demo.yaml", f"{Q}.diversity_gamma=4.0"),
        ("lfq_lr_1e-3", "learning rate 1e-3", "vq_lfq_demo.yaml", "train.lr=1.0e-3"),
        ("lfq_encoder_4", "encoder of 4 blocks", "vq_lfq_demo.yaml", "model.encoder.num_blocks=4"),
        ("lfq_projected_5", "a learned projection of 5 values to the 10 bits", "vq_lfq_demo.yaml", f"{Q}.dim=5"),
    ]
}
ROWS |= LFQ_STUDY


def joined_ids(tokens: vtok.Tokens) -> torch.Tensor:
    """(B, L, C) sub-codes -> (B * L,) one code per position (mixed radix, first sub-code most significant)."""
    ids = tokens.ids.reshape(-1, tokens.ids.shape[-1])
    code = torch.zeros(ids.shape[0], dtype=torch.long)
    for c, size in enumerate(tokens.codebook_sizes):
        code = code * size + ids[:, c]
    return code


@torch.no_grad()
def score(tok: vtok.Tokenizer, splits: dict[str, torch.Tensor]) -> dict[str, float]:
    row: dict[str, float] = {}
    for split, images in splits.items():
        rec = reconstruct(tok, images)
        row[f"{split}_psnr"] = psnr_cell(rec)
        if split != "heldout":
            continue
        tokens = rec.tokens
        codes = joined_ids(tokens)
        size = math.prod(tokens.codebook_sizes)
        counts = torch.bincount(codes, minlength=size).double()
        p = counts[counts > 0] / counts.sum()
        row["codes_used"] = int((counts > 0).sum())
        row["usage"] = round(row["codes_used"] / size, 4)
        row["entropy_bits"] = round(float(-(p * p.log2()).sum()), 3)
        row["max_entropy_bits"] = round(math.log2(min(size, len(codes))), 3)
        if isinstance(tok.quantizer, (LFQ, ResidualLFQ)):  # binary codes: bit statistics
            bits = int(math.log2(size))
            ones = ((codes[:, None] >> torch.arange(bits - 1, -1, -1)) & 1).double().mean(0)
            row["bits_in_use"] = int(((ones > 0.01) & (ones < 0.99)).sum())
            row["least_balanced_bit"] = round(float(torch.minimum(ones, 1 - ones).min() * 2), 3)
        row["color_error"] = color_error_cell(rec)
    return row


@torch.no_grad()
def speed(tok: vtok.Tokenizer, images: torch.Tensor, repeats: int = 5) -> dict[str, float]:
    """Median ms per image to encode and to decode ``images`` as one batch."""
    tokens = tok.encode(images)
    tok.decode(tokens)  # warm-up
    enc, dec = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = tok.encode(images)
        t1 = time.perf_counter()
        tok.decode(tokens)
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    n = len(images)
    return {
        "encode_ms": round(1e3 * statistics.median(enc) / n, 3),
        "decode_ms": round(1e3 * statistics.median(dec) / n, 3),
    }


def train_row(name: str, seed: int, steps: int, work: Path) -> tuple[Path, float]:
    _, preset, overrides = ROWS[name]
    cfg = vtok.load_config(
        PRESETS / preset, [*overrides, f"train.steps={steps}", f"train.seed={seed}", "train.sample_every=100000"]
    )
    started = time.perf_counter()
    final = TokenizerTrainer(cfg, work / f"{name}_s{seed}", progress=False).train()
    return Path(final), time.perf_counter() - started


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--rows", default=",".join(k for k in ROWS if k not in LFQ_STUDY))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--work", default=str(ROOT / "runs" / "codes"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "codes.json"))
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    splits = crop_splits(64)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report["budget"] = {"steps": args.steps, "batch_size": 16, "image_size": 64, "bits_per_image": 640}
    rows = report.setdefault("rows", {})
    names = args.rows.split(",")
    for name in names:
        per_seed = rows.get(name, {}).get("seeds", {})
        for seed in (int(s) for s in args.seeds.split(",")):
            if str(seed) in per_seed:
                continue
            final, seconds = train_row(name, seed, args.steps, Path(args.work))
            per_seed[str(seed)] = {"train_seconds": round(seconds, 1), **score(vtok.load(final), splits)}
            print(name, seed, per_seed[str(seed)], flush=True)
        keys = [k for k, v in next(iter(per_seed.values())).items() if isinstance(v, (int, float))]
        mean = {k: round(statistics.mean(r[k] for r in per_seed.values() if k in r), 3) for k in keys}
        rows[name] = {"what": ROWS[name][0], "seeds": per_seed, "mean": mean}
        out.write_text(json.dumps(report, indent=1) + "\n")
    # Speed side by side: every row's seed-0 model, one after another in this process.
    for name in names:
        tok = vtok.load(Path(args.work) / f"{name}_s0" / "final").eval()
        rows[name]["speed"] = speed(tok, splits["heldout"])
    report["speed_threads"] = torch.get_num_threads()
    out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    print(
        "| code | seeds | held-out PSNR (seeds) | train PSNR | codes used | code entropy (bits) | bits in use | "
        "encode ms/img | decode ms/img |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in report["rows"].items():
        m, seeds = row["mean"], row["seeds"]
        each = ", ".join(f"{s['heldout_psnr']:.2f}" for s in seeds.values())
        bits = f"{m['bits_in_use']:.0f} / 10" if "bits_in_use" in m else "-"
        sp = row.get("speed", {})
        print(
            f"| {name} | {len(seeds)} | {m['heldout_psnr']:.2f} ({each}) | {m['train_psnr']:.2f} | "
            f"{m['codes_used']:.0f} ({m['usage']:.1%}) | {m['entropy_bits']:.2f} / {m['max_entropy_bits']:.2f} | "
            f"{bits} | {sp.get('encode_ms', float('nan')):.2f} | {sp.get('decode_ms', float('nan')):.2f} |"
        )


if __name__ == "__main__":
    main()
