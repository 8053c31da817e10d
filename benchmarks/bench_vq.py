"""vq_f16 encode/decode throughput and peak memory: vtok against diffusers' VQModel of the same shape.

Each (implementation, batch) runs in its own subprocess so peak RSS belongs to it alone;
all rows come from one invocation, side by side. Usage:

    python benchmarks/bench_vq.py [--size 256] [--batches 1 16] [--reps 3] [--out benchmarks/vq_f16.json]
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
IMPLS = ("diffusers", "vtok-plain", "vtok")


def build(impl: str) -> tuple[callable, callable]:
    """(encode, decode) callables for one implementation, weights seeded identically where shared."""
    import vtok

    torch.manual_seed(0)
    if impl == "diffusers":
        from diffusers import VQModel

        # LlamaGen VQ-16's shape in diffusers' blocks: 5 levels (128,128,256,256,512), 2 res blocks,
        # attention in the lowest level and the mid block, 256 latent channels -> 8-d codes, 16384 codes.
        model = VQModel(
            down_block_types=("DownEncoderBlock2D",) * 4 + ("AttnDownEncoderBlock2D",),
            up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 128, 256, 256, 512),
            layers_per_block=2,
            latent_channels=256,
            num_vq_embeddings=16384,
            vq_embed_dim=8,
            norm_num_groups=32,
        ).eval()

        def encode(x):
            return model.quantize(model.encode(x).latents)[2][2]

        def decode(ids, h):
            return model.decode(model.quantize.get_codebook_entry(ids, (ids.shape[0] // (h * h), h, h, 8))).sample

        return model, encode, decode
    tok = vtok.build(ROOT / "configs" / "tokenizer" / "vq_f16.yaml").eval()
    fmt = torch.channels_last if impl == "vtok" else torch.contiguous_format
    tok = tok.to(memory_format=fmt)

    def encode(x):
        return tok.encode(x.contiguous(memory_format=fmt))

    def decode(tokens, h):
        return tok.decode(tokens)

    return tok, encode, decode


def run_one(impl: str, batch: int, size: int, reps: int) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    model, encode, decode = build(impl)
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
    h = size // 16
    with torch.inference_mode():
        codes = encode(x)  # warm-up
        decode(codes, h)
        t0 = time.perf_counter()
        for _ in range(reps):
            codes = encode(x)
        t_enc = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        for _ in range(reps):
            out = decode(codes, h)
        t_dec = (time.perf_counter() - t0) / reps
    return {
        "impl": impl,
        "batch": batch,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "encode_img_s": batch / t_enc,
        "decode_img_s": batch / t_dec,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "out_checksum": float(out.float().abs().mean()),
    }


def check_outputs_unchanged(size: int) -> dict:
    """vtok's fast path (channels_last, inference_mode) against its plain path: same ids, same pixels."""
    _, enc_fast, dec_fast = build("vtok")
    _, enc_plain, dec_plain = build("vtok-plain")
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.inference_mode():
        a, b = enc_fast(x), enc_plain(x)
        diff = (dec_fast(a, 0) - dec_plain(a, 0)).abs().max().item()
    return {"same_ids": bool(torch.equal(a.ids, b.ids)), "max_abs_pixel_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "vq_f16.json"))
    p.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), args.size, args.reps)))
        return
    rows = []
    for batch in args.batches:
        for impl in IMPLS:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                impl,
                str(batch),
                "--size",
                str(args.size),
                "--reps",
                str(args.reps),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(
                f"{impl:>10} b={batch:<3} enc {rows[-1]['encode_img_s']:7.2f} img/s  dec {rows[-1]['decode_img_s']:7.2f} img/s  peak {rows[-1]['peak_rss_mib']:7.0f} MiB",
                flush=True,
            )
    check = check_outputs_unchanged(args.size)
    speedups = {}
    for batch in args.batches:
        base = next(r for r in rows if r["impl"] == "diffusers" and r["batch"] == batch)
        mine = next(r for r in rows if r["impl"] == "vtok" and r["batch"] == batch)
        speedups[f"b{batch}"] = {k: mine[k] / base[k] for k in ("encode_img_s", "decode_img_s")}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "size": args.size,
        "reps": args.reps,
        "rows": rows,
        "vtok_over_diffusers": speedups,
        "outputs_unchanged": check,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"vtok_over_diffusers": speedups, "outputs_unchanged": check}, indent=2))


if __name__ == "__main__":
    main()
