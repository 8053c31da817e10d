"""GPT-B sampling and training throughput, KV cache against recomputing the prefix, side by side.

Random-initialised LlamaGen GPT-B (12 layers, 768 wide, 16384 codes, 16x16 = 256
tokens), float32 unless --dtype says otherwise. Every row runs in this one process,
one after another. The cached and uncached runs must return the same tokens.

    python benchmarks/bench_ar.py [--batches 1 8] [--tokens 256] [--out benchmarks/ar_gpt_b.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import vtok
from vtok.ar_models.sample import SamplingConfig, generate

ROOT = Path(__file__).resolve().parent.parent


def timed_generate(model, labels, sampling) -> tuple[float, torch.Tensor]:
    t0 = time.perf_counter()
    tokens = generate(model, labels, sampling=sampling)
    return time.perf_counter() - t0, tokens.ids


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument(
        "--skip-uncached", action="store_true", help="only the cached rows (the uncached ones take minutes on a CPU)"
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "ar_gpt_b.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    model = vtok.build(ROOT / "configs" / "ar" / "gpt_b.yaml").eval().to(args.device, getattr(torch, args.dtype))
    tokens = model.max_steps
    rows = []
    for batch in args.batches:
        labels = torch.arange(batch, device=args.device) % 1000
        generate(model, labels[:1], sampling=SamplingConfig(seed=0))  # warm-up
        configs = [("kv_cache", SamplingConfig(seed=0)), ("kv_cache_cfg2", SamplingConfig(seed=0, cfg_scale=2.0))]
        if not args.skip_uncached:
            configs.append(("no_cache", SamplingConfig(seed=0, use_cache=False)))
        ids = {}
        for name, sampling in configs:
            seconds, ids[name] = timed_generate(model, labels, sampling)
            row = {"mode": name, "batch": batch, "seconds": seconds, "tokens_per_s": batch * tokens / seconds}
            row["seconds_per_image"] = seconds / batch
            rows.append(row)
            print(json.dumps(row), flush=True)
        if "no_cache" in ids:
            same = torch.equal(ids["kv_cache"], ids["no_cache"])
            cached, uncached = rows[-3]["seconds"], rows[-1]["seconds"]  # kv_cache, kv_cache_cfg2, no_cache
            rows.append({"batch": batch, "cache_speedup": uncached / cached, "same_tokens": same})
            print(json.dumps(rows[-1]), flush=True)
    # Training: forward + backward + AdamW step at batch 8 x 256 tokens.
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 16384, (8, model.positions, 1), device=args.device)
    labels = torch.arange(8, device=args.device)
    times = []
    for i in range(4):
        t0 = time.perf_counter()
        loss, _ = model(ids, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if args.device == "cuda":
            torch.cuda.synchronize()
        if i > 0:
            times.append(time.perf_counter() - t0)
    train = {"batch": 8, "tokens": model.positions, "tokens_per_s": 8 * model.positions / (sum(times) / len(times))}
    print(json.dumps(train), flush=True)
    report = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.device}",
        "model": f"GPT-B, {model.num_params() / 1e6:.1f}M parameters, {args.dtype}",
        "tokens_per_image": tokens,
        "sampling": rows,
        "training": train,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
