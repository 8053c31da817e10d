"""GPT-B sampling, vtok's ``generate`` beside LlamaGen's own ``generate``, on the same (converted) weights.

LlamaGen's class-conditional GPT-B (12 layers, width 768, 16384 codes, 16x16 = 256 tokens) is built from
LlamaGen's own code (a checkout given by ``--llamagen``, imported from there, never copied into vtok) with
seeded random weights, saved as a LlamaGen checkpoint and converted with ``vtok convert --from llamagen-gpt``
(speed does not depend on the weights). Float32 on the CPU, temperature 1, top-k 1000, at batch 1, batch 8
and batch 8 with CFG 2 (both run the conditional and null halves in one batch of 16). In one process, each
setting runs LlamaGen then vtok, after one warm-up call of each; a row's ratio is LlamaGen's seconds over
vtok's, ``--calls`` times in turn (LlamaGen, vtok, LlamaGen, vtok, ...); a row gives each one's fastest call (the
first call of each is its warm-up) and all of them, and its ratio is LlamaGen's fastest over vtok's. On a shared
machine a call now and then runs several times slower than the others (seen on both sides); the fastest of two
or more calls leaves those out. The eager (not compiled) paths of both.

    python benchmarks/bench_llamagen.py --llamagen /work/ref/llamagen [--calls 2] [--threads 2] [--out benchmarks/llamagen_side.json]

``--profile`` adds torch.profiler's table of vtok's eager decode (batch 8, CFG 2) by operator.

Each row also gives the floor no eager implementation of the same fp32 model goes under on this machine: the
time of the GPT's linear layers alone (every weight read once per token step, one call each, as the step
makes them) over the sample's 256 steps, at the row's batch (16 under CFG); and the JSON records the machine's
read bandwidth (a sum over 512 MB), the other bound of a step that reads 444 MB of weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from vtok.ar_models.sample import SamplingConfig, generate
from vtok.convert import convert

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [("B=1", 1, 1.0), ("B=8", 8, 1.0), ("B=8, CFG 2", 8, 2.0)]


def llamagen_model(root: str):
    sys.path.insert(0, root)
    from autoregressive.models.gpt import GPT_B  # LlamaGen's own model

    torch.manual_seed(0)
    return GPT_B(vocab_size=16384, block_size=256, num_classes=1000, cls_token_num=1, model_type="c2i").eval()


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@torch.inference_mode()
def matmul_floor(model, batch: int, reps: int = 10) -> float:
    """Seconds of the model's linear layers alone over one sample's steps, at ``batch`` rows a step."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {m.in_features: torch.randn(batch, m.in_features) for m in linears}
    for m in linears:  # warm-up
        m(inputs[m.in_features])
    t0 = time.perf_counter()
    for _ in range(reps):
        for m in linears:
            m(inputs[m.in_features])
    return (time.perf_counter() - t0) / reps * model.max_steps


def read_bandwidth() -> float:
    """GB/s of a sum over 512 MB of float32 (the weights of a GPT-B step are 444 MB)."""
    x = torch.ones(128 * 1024 * 1024)
    x.sum()
    t0 = time.perf_counter()
    for _ in range(5):
        x.sum()
    return x.numel() * 4 * 5 / (time.perf_counter() - t0) / 1e9


def profile_vtok(model) -> None:
    from torch.profiler import ProfilerActivity, profile

    labels = torch.arange(8)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        generate(model, labels, sampling=SamplingConfig(seed=0, top_k=1000, cfg_scale=2.0))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--llamagen", required=True, help="a checkout of FoundationVision/LlamaGen (its autoregressive/)")
    p.add_argument("--calls", type=int, default=2, help="calls of each sampler per setting, alternating")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--only-vtok", action="store_true", help="skip LlamaGen's rows (profiling)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "llamagen_side.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lg = llamagen_model(args.llamagen)
    from autoregressive.models.generate import generate as lg_generate  # LlamaGen's own sampler

    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"model": lg.state_dict()}, Path(tmp) / "gpt_b.pt")
        model = convert("llamagen-gpt", Path(tmp) / "gpt_b.pt").eval()
    if args.profile:
        profile_vtok(model)
    rows = []
    for name, batch, cfg in SETTINGS:
        labels = torch.arange(batch) % 1000
        row = {"setting": name, "batch": batch, "cfg": cfg}
        kw = dict(cfg_scale=cfg, temperature=1.0, top_k=1000, top_p=1.0, sample_logits=True)
        sampling = SamplingConfig(seed=0, top_k=1000, cfg_scale=cfg)
        calls: dict[str, list[float]] = {"llamagen": [], "vtok": []}
        for _ in range(args.calls):
            if not args.only_vtok:
                calls["llamagen"].append(seconds(lambda y=labels, kw=kw: lg_generate(lg, y, 256, **kw)))
            calls["vtok"].append(seconds(lambda y=labels, s=sampling: generate(model, y, sampling=s)))
        for impl, times in calls.items():
            if times:
                row[f"{impl}_s"] = min(times)
                row[f"{impl}_calls_s"] = [round(t, 2) for t in times]
        row["matmul_floor_s"] = matmul_floor(model, batch * (2 if cfg != 1.0 else 1))
        if "llamagen_s" in row:
            row["llamagen_over_vtok"] = round(row["llamagen_s"] / row["vtok_s"], 2)
            row["llamagen_over_floor"] = round(row["llamagen_s"] / row["matmul_floor_s"], 2)
        rows.append(row)
        print(json.dumps(row), flush=True)
    out = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
           "model": "LlamaGen GPT-B, random weights (seed 0), converted", "sampling": "fp32, top-k 1000, eager",
           "calls": args.calls, "read_gb_per_s": round(read_bandwidth(), 1), "rows": rows}  # fmt: skip
    if not args.only_vtok:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
