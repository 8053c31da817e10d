"""Encode / decode images/s and peak memory of tokenizer presets at 256x256, one process per preset.

    python benchmarks/bench_presets.py [--presets rq_8x8x4 rq_f16_d4 dual_shared_f16 dual_separate_f16 vq_f16]
                                       [--batch 1] [--reps 2] [--out benchmarks/presets.json]

Random weights (speed does not depend on them), float32, inference_mode.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ["vq_f16", "rq_8x8x4", "rq_f16_d4", "dual_shared_f16", "dual_separate_f16"]


def run_one(preset: str, batch: int, reps: int, device: str) -> dict:
    import vtok

    torch.manual_seed(0)
    tok = vtok.build(ROOT / "configs" / "tokenizer" / f"{preset}.yaml").eval().to(device)
    x = (torch.rand(batch, 3, 256, 256) * 2 - 1).to(device)
    with torch.inference_mode():
        tokens = tok.encode(x)
        tok.decode(tokens)
        t0 = time.perf_counter()
        for _ in range(reps):
            tokens = tok.encode(x)
        t_enc = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            tok.decode(tokens)
        t_dec = (time.perf_counter() - t0) / reps
    return {
        "preset": preset,
        "params_m": round(sum(p.numel() for p in tok.parameters()) / 1e6, 1),
        "tokens": f"{tokens.num_positions} x {len(tokens.codebook_sizes)}",
        "encode_img_s": batch / t_enc,
        "decode_img_s": batch / t_dec,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--presets", nargs="+", default=DEFAULT)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "presets.json"))
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.batch, args.reps, args.device)))
        return
    rows = []
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--one", preset, "--batch", str(args.batch), "--reps", str(args.reps)]
        out = subprocess.run([*cmd, "--device", args.device], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.device}"
    report = {"machine": machine, "batch": args.batch, "size": 256, "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
