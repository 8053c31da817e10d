"""The fast paths timed side by side on one device: tokenizer encode/decode against diffusers' VQModel, GPT-B
sampling, demo-tokenizer training and FID feature extraction, each fp32 eager against bf16 (eager, compiled).

    python benchmarks/bench_fast.py --device cuda            # what benchmarks/gpu.sh runs (<= 8 min on an H100)
    python benchmarks/bench_fast.py --device cpu --small     # the same rows at CPU sizes (CI-sized: ~2-4 min)

Writes one JSON (``--out``) and prints the table for RESULTS.md with the device named. Every
row is measured in this one process, one after another; ratios are between rows of the same
run. The bf16 rows also report how far they move from float32: the share of equal ids on the
built-in crops (with ``--trained``, on a trained tokenizer) and the PSNR between the bf16 and
float32 decodes of the same tokens.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_vq import build as build_vq

import vtok
from vtok.ar_models.sample import SamplingConfig, generate
from vtok.eval.psnr import psnr_per_image
from vtok.fast import accelerate, autocast, compile_problem

ROOT = Path(__file__).resolve().parent.parent
# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' data sheets.
PEAK_BF16 = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, reps: int) -> float:
    """Seconds per call, after two warm-up calls (compilation happens there)."""
    for _ in range(2):
        fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def vq16(impl: str, device: torch.device, compiled: bool = False) -> tuple[torch.nn.Module, callable, callable]:
    """(model, encode: images -> codes, decode: (codes, h) -> pixels) of one implementation, seeded alike."""
    torch.manual_seed(0)
    if impl == "diffusers":
        model, enc, dec = build_vq("diffusers")  # LlamaGen VQ-16's shape in diffusers' blocks
        model.to(device)
        if compiled:
            model.encoder.compile(dynamic=False)
            model.decoder.compile(dynamic=False)
        return model, enc, dec
    tok = vtok.build(ROOT / "configs" / "tokenizer" / "vq_f16.yaml").eval().to(device)
    accelerate(tok, compile=compiled, channels_last=device.type == "cuda")
    return tok, tok.encode, lambda tokens, _: tok.decode(tokens)


def time_codec(enc, dec, x: torch.Tensor, h: int, precision: str, reps: int) -> tuple[float, float]:
    """Seconds per encode and per decode of the batch ``x``."""
    with torch.inference_mode(), autocast(x.device, precision):
        codes = enc(x)
        return timed(lambda: enc(x), x.device, reps), timed(lambda: dec(codes, h), x.device, reps)


def tokenizer_rows(args, device: torch.device) -> list[dict]:
    rows = []
    size, h = args.size, args.size // 16
    for impl in ("diffusers", "vtok"):
        for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
            if compiled and args.no_compile:
                continue
            _, enc, dec = vq16(impl, device, compiled)
            for batch in args.batches if not compiled else [args.compile_batch]:
                x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
                t_enc, t_dec = time_codec(enc, dec, x, h, precision, args.reps)
                row = dict(impl=impl, precision=precision, compiled=compiled, batch=batch, size=size)
                row.update(encode_img_s=batch / t_enc, decode_img_s=batch / t_dec)
                row["encode_decode_img_s"] = batch / (t_enc + t_dec)
                rows.append(row)
                print(json.dumps(row), flush=True)
    flops = {impl: codec_flops(*vq16(impl, device)[1:], args.size, device) for impl in ("diffusers", "vtok")}
    peak = next((v for k, v in PEAK_BF16.items() if k in device_name(device)), None)
    for row in rows:
        row["tflops"] = flops[row["impl"]] * row["encode_decode_img_s"] / 1e12
        row["share_of_bf16_peak"] = row["tflops"] / peak if peak else None
    return rows


def codec_flops(enc, dec, size: int, device: torch.device) -> float:
    """FLOPs of one image's encode + decode, counted by torch's FlopCounterMode (convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(1, 3, size, size, device=device) * 2 - 1
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        dec(enc(x), size // 16)
    return float(counter.get_total_flops())


def time_sampling(
    model, labels, s: SamplingConfig, precision: str, compiled: bool, device
) -> tuple[float, torch.Tensor]:
    """Seconds for one batch of samples after a warm-up batch (which compiles), and their ids."""
    generate(model, labels, sampling=s, precision=precision, compile=compiled)
    sync(device)
    t0 = time.perf_counter()
    ids = generate(model, labels, sampling=s, precision=precision, compile=compiled).ids
    sync(device)
    return time.perf_counter() - t0, ids


def gpt_rows(args, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    model = vtok.build(ROOT / "configs" / "ar" / args.gpt).eval().to(device)
    rows, base = [], {}
    for batch in args.gpt_batches:
        labels = torch.arange(batch, device=device) % max(1, model.cfg.num_classes)
        s = SamplingConfig(cfg_scale=2.0, seed=0)
        for precision, compiled in (("fp32", False), ("bf16", False), ("bf16", True)):
            if compiled and args.no_compile:
                continue
            seconds, ids = time_sampling(model, labels, s, precision, compiled, device)
            row = dict(model=args.gpt, batch=batch, cfg=2.0, precision=precision, compiled=compiled)
            row.update(seconds=seconds, images_per_s=batch / seconds, tokens_per_s=batch * model.max_steps / seconds)
            if precision == "fp32":
                base[batch] = (seconds, ids)
            row["speedup_over_fp32_eager"] = base[batch][0] / seconds
            row["same_tokens_as_fp32"] = float((ids == base[batch][1]).float().mean())
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def training_row(precision: str, steps: int, batch: int) -> dict:
    """One precision's training throughput, from the trainer's own images_per_s log (its own process:
    accelerate fixes the mixed precision once per process)."""
    from vtok.tokenizers.train import train_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"train.steps={steps}",
            f"train.mixed_precision={precision}",
            f"train.batch_size={batch}",
            "train.log_every=5",
            "train.save_every=100000",
            "train.sample_every=100000",
        ]
        cfg = vtok.load_config(ROOT / "configs" / "tokenizer" / "vq_demo.yaml", overrides)
        train_tokenizer(cfg, Path(tmp) / "run", progress=False)
        logs = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["images_per_s"] for r in logs if "images_per_s" in r][1:]  # the first window holds warm-up
    row = dict(model="vq_demo", precision=precision, batch=batch, steps=steps)
    row["images_per_s"] = sum(speeds) / max(1, len(speeds))
    return row


def training_rows(args, device: torch.device) -> list[dict]:
    rows = []
    for precision in ("no", "bf16"):
        cmd = [sys.executable, __file__, "--train-one", precision, str(args.train_steps), str(args.train_batch)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def fid_rows(args, device: torch.device) -> list[dict]:
    from vtok.eval.features import InceptionFeatures

    features = InceptionFeatures(device=device)
    x = torch.rand(args.fid_batch, 3, args.size, args.size) * 2 - 1
    seconds = timed(lambda: features(x), device, args.reps)
    row = dict(
        network="FID InceptionV3 pool3", batch=args.fid_batch, size=args.size, images_per_s=args.fid_batch / seconds
    )
    print(json.dumps(row), flush=True)
    return [row]


def bf16_fidelity(trained: str | None, device: torch.device) -> dict:
    """bf16 against float32 on the built-in held-out crops: equal ids, and PSNR between the two decodes."""
    from vtok.eval.heldout import crops

    if trained:
        tok, source = vtok.load(trained), trained
    else:
        torch.manual_seed(0)
        tok, source = vtok.build(ROOT / "configs" / "tokenizer" / "vq_demo.yaml"), "vq_demo.yaml, random weights"
    tok = tok.eval().to(device)
    size = 64  # the demos' size
    x = crops("heldout", size).to(device)
    with torch.inference_mode():
        ref = tok.encode(x)
        with autocast(device, "bf16"):
            low = tok.encode(x)
            low_pixels = tok.decode(ref).float()
        pixels = tok.decode(ref)
    return {
        "tokenizer": source,
        "images": len(x),
        "same_ids": float((low.ids == ref.ids).float().mean()),
        "decode_psnr_bf16_vs_fp32": float(psnr_per_image(pixels.cpu(), low_pixels.cpu()).mean()),
    }


def table(report: dict) -> str:
    lines = [f"Device: {report['device']}; torch {report['torch']}.", ""]
    lines += ["| impl | precision | compiled | batch | encode img/s | decode img/s | enc+dec TFLOP/s | of bf16 peak |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for r in report["tokenizer"]:
        share = f"{r['share_of_bf16_peak']:.1%}" if r["share_of_bf16_peak"] else "-"
        lines.append(
            f"| {r['impl']} | {r['precision']} | {r['compiled']} | {r['batch']} | {r['encode_img_s']:.1f} | "
            f"{r['decode_img_s']:.1f} | {r['tflops']:.2f} | {share} |"
        )
    lines += ["", "| GPT | batch | precision | compiled | images/s | tokens/s | x fp32 eager | same tokens |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for r in report["gpt"]:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['precision']} | {r['compiled']} | {r['images_per_s']:.2f} | "
            f"{r['tokens_per_s']:.0f} | {r['speedup_over_fp32_eager']:.2f} | {r['same_tokens_as_fp32']:.1%} |"
        )
    lines += ["", "| training (vq_demo) | batch | images/s |", "|---|---|---|"]
    lines += [f"| mixed_precision {r['precision']} | {r['batch']} | {r['images_per_s']:.1f} |" for r in report["train"]]
    f = report["fid"][0]
    lines += ["", f"FID features: {f['images_per_s']:.1f} images/s at batch {f['batch']} ({f['size']}px inputs)."]
    lines += [
        "",
        "| tokenizer (bf16 against fp32, held-out crops) | equal ids | PSNR between the decodes of the same tokens |",
    ]
    lines += ["|---|---|---|"]
    for b in report["bf16_fidelity"]:
        lines.append(f"| {b['tokenizer']} | {b['same_ids']:.2%} | {b['decode_psnr_bf16_vs_fp32']:.1f} dB |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="CPU sizes: 128 px, batches 1/4, the demo GPT")
    p.add_argument("--trained", nargs="*", default=[], help="trained tokenizer folders for the bf16 id agreement")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "fast.json"))
    p.add_argument("--sections", default="tokenizer,gpt,train,fid,bf16_fidelity", help="rerun some; others kept")
    p.add_argument("--train-one", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.train_one:
        print(json.dumps(training_row(args.train_one[0], int(args.train_one[1]), int(args.train_one[2]))))
        return
    device = torch.device(args.device)
    small = args.small or device.type == "cpu"
    args.size = 128 if small else 256
    args.batches = [1, 4] if small else [1, 16, 64]
    args.compile_batch = 4 if small else 16
    args.gpt = "gpt_demo.yaml" if small else "gpt_b.yaml"
    args.gpt_batches = [1, 4] if small else [1, 8, 32]
    args.train_steps, args.train_batch = (20, 16) if small else (200, 64)
    args.fid_batch = 8 if small else 64
    args.reps = args.reps or (2 if small else 10)
    problem = compile_problem()
    if problem and not args.no_compile:
        print(problem, "- compiled rows skipped")
        args.no_compile = True
    t0 = time.perf_counter()
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report.update(device=device_name(device), torch=torch.__version__, small=small)
    sections = {
        "tokenizer": lambda: tokenizer_rows(args, device),
        "gpt": lambda: gpt_rows(args, device),
        "train": lambda: training_rows(args, device),
        "fid": lambda: fid_rows(args, device),
        "bf16_fidelity": lambda: [bf16_fidelity(t, device) for t in args.trained or [None]],
    }
    for name in args.sections.split(","):
        report[name] = sections[name]()
        out.write_text(json.dumps(report, indent=1) + "\n")
    report["seconds"] = time.perf_counter() - t0
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(report))
    print(f"{report['seconds']:.0f} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
