"""Token-Shuffle (s = 2) against the plain GPT (s = 1) on the VQ demo's tokens, at one wall-clock training budget.

Both models are ``configs/ar/gpt_demo.yaml`` / ``gpt_shuffle_demo.yaml`` (4 layers, width 256; they differ only in
``shuffle``), trained on the same shards of the built-in crops (the demo tokenizer's 8x8 tokens of 1024 codes) with
the preset's optimiser, for the same number of wall-clock seconds on this CPU: the learning rate warms up over the
preset's steps and then follows the preset's cosine over the *elapsed share of the budget*, so both runs finish their
schedule. Stages, each one process and under five minutes (run each under ``flock /work/wt/cpu.lock``):

    python benchmarks/bench_shuffle.py prepare --tokenizer TOK --work W     # shards of the built-in crops
    python benchmarks/bench_shuffle.py train --window 1 --seed 0 --work W   # (and --window 2, seeds 0 and 1)
    python benchmarks/bench_shuffle.py speed --work W                       # images/s, both windows side by side
    python benchmarks/bench_shuffle.py quality --window 1 --seed 0 --work W --tokenizer TOK   # NLL and FID
    python benchmarks/bench_shuffle.py report --work W --out benchmarks/shuffle.json

Quality: the per-token NLL (nats, the training loss's quantity: the mean over every token) on the 182 training crops
(their class, and the null class) and on the 52 held-out crops (other photographs: the null class); the FID of 182
samples (13 per class, CFG 2, top-k 100) against the 182 training crops, both at 64 px, with its protocol, beside
the FID of the demo tokenizer's own reconstructions of those crops (the floor a GPT over its tokens can reach).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import vtok
from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, generate
from vtok.ar_models.train import layout_from_shards
from vtok.config import build_component, instantiate
from vtok.shards import TokenShards, shard_batches, write_shards
from vtok.training import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {1: ROOT / "configs/ar/gpt_demo.yaml", 2: ROOT / "configs/ar/gpt_shuffle_demo.yaml"}
SIZE = 64


def build(window: int, shards: TokenShards, seed: int) -> tuple[GPT, TrainConfig]:
    cfg = vtok.load_config(PRESETS[window])
    torch.manual_seed(seed)
    model = build_component("model", layout_from_shards(cfg["model"], shards), "model")
    return model, instantiate(TrainConfig, cfg["train"])


def prepare(args: argparse.Namespace) -> None:
    tokenizer = vtok.load(args.tokenizer).eval()
    write_shards(tokenizer, "builtin", SIZE, Path(args.work) / "tokens", batch_size=32, progress=False)
    print(json.dumps({"shards": len(TokenShards(Path(args.work) / "tokens"))}))


def train(args: argparse.Namespace) -> None:
    """Train for ``--budget`` wall-clock seconds; the run's model and figures go to WORK/s{window}_seed{seed}."""
    torch.set_num_threads(args.threads)
    shards = TokenShards(Path(args.work) / "tokens")
    model, t = build(args.window, shards, args.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas))
    model.train()
    tokens, step, losses = 0, 0, []
    start = time.perf_counter()
    for ids, labels, lengths in shard_batches(shards, t.batch_size, args.seed, 0):
        elapsed = time.perf_counter() - start
        if elapsed >= args.budget:
            break
        share = min(1.0, elapsed / args.budget)
        warm = min(1.0, (step + 1) / max(1, t.warmup_steps))
        cosine = t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * share))
        for g in opt.param_groups:
            g["lr"] = t.lr * warm * cosine
        loss, _ = model(ids, labels, lengths)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        losses.append(loss.item())
        tokens += ids.shape[0] * ids.shape[1]
        step += 1
    seconds = time.perf_counter() - start
    out = Path(args.work) / f"s{args.window}_seed{args.seed}"
    model.eval().save_pretrained(out / "model")
    row = {
        "window": args.window,
        "seed": args.seed,
        "budget_s": args.budget,
        "seconds": round(seconds, 1),
        "steps": step,
        "train_tokens_per_s": round(tokens / seconds, 1),
        "params": model.num_params(),
        "final_loss_mean_last_20": sum(losses[-20:]) / len(losses[-20:]),
        "threads": torch.get_num_threads(),
    }
    (out / "train.json").write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps(row))


def _images_per_s(model: GPT, batch: int, cfg: float, reps: int) -> float:
    labels = torch.arange(batch) % model.cfg.num_classes
    sampling = SamplingConfig(seed=0, top_k=100, cfg_scale=cfg)
    generate(model, labels, sampling=sampling)  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        generate(model, labels, sampling=sampling)
    return batch * reps / (time.perf_counter() - t0)


def speed(args: argparse.Namespace) -> None:
    """Sampling images/s of the seed-0 models, s = 1 and s = 2 alternating in one process."""
    torch.set_num_threads(args.threads)
    models = {w: vtok.load(Path(args.work) / f"s{w}_seed0" / "model").eval() for w in (1, 2)}
    rows = []
    for batch, reps in ((1, 6), (8, 3)):
        for cfg in (1.0, 2.0):
            row = {"batch": batch, "cfg": cfg}
            for w, model in models.items():
                row[f"s{w}_images_per_s"] = round(_images_per_s(model, batch, cfg, reps), 2)
            row["speedup"] = round(row["s2_images_per_s"] / row["s1_images_per_s"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    (Path(args.work) / "speed.json").write_text(json.dumps(rows, indent=1) + "\n")


@torch.no_grad()
def _nll(model: GPT, ids: torch.Tensor, labels: torch.Tensor) -> float:
    total = 0.0
    for i in range(0, len(ids), 64):
        loss, _ = model(ids[i : i + 64], labels[i : i + 64])
        total += loss.item() * len(ids[i : i + 64])
    return total / len(ids)


def quality(args: argparse.Namespace) -> None:
    """Per-token NLL on training and held-out crops, and the FID of samples against the training crops."""
    from vtok.eval.features import InceptionFeatures
    from vtok.eval.frechet import GaussianStats, frechet_distance
    from vtok.eval.heldout import crops

    torch.set_num_threads(args.threads)
    run = Path(args.work) / f"s{args.window}_seed{args.seed}"
    model = vtok.load(run / "model").eval()
    tokenizer = vtok.load(args.tokenizer).eval()
    shards = TokenShards(Path(args.work) / "tokens")
    ids, labels, _ = shards.batch(list(range(len(shards))), [False] * len(shards))
    with torch.no_grad():
        held = tokenizer.encode(crops("heldout", SIZE)).ids
    null = model.cfg.num_classes
    row = {
        "window": args.window,
        "seed": args.seed,
        "nll_train_class": _nll(model, ids, labels),
        "nll_train_null": _nll(model, ids, torch.full_like(labels, null)),
        "nll_heldout_null": _nll(model, held, torch.full((len(held),), null)),
    }
    features = InceptionFeatures()
    ref = Path(args.work) / "train_crops_stats.pt"
    if not ref.is_file():
        stats = GaussianStats(features.dim)
        stats.update(features(crops("train", SIZE)))
        torch.save({"sum": stats.sum, "outer": stats.outer, "count": stats.count}, ref)
    saved = torch.load(ref, weights_only=False)
    real = GaussianStats(features.dim)
    real.sum, real.outer, real.count = saved["sum"], saved["outer"], saved["count"]
    floor = Path(args.work) / "fid_floor.json"
    if not floor.is_file():  # the tokenizer's own reconstructions of the training crops: the best a GPT can reach
        recon = GaussianStats(features.dim)
        with torch.no_grad():
            for batch in crops("train", SIZE).split(32):
                recon.update(features(tokenizer.decode(tokenizer.encode(batch))))
        value = frechet_distance(real.mean, real.covariance, recon.mean, recon.covariance)
        floor.write_text(json.dumps({"fid_recon_train_vs_train_crops": value}) + "\n")
    row.update(json.loads(floor.read_text()))
    per_class = len(shards) // model.cfg.num_classes
    fake = GaussianStats(features.dim)
    sampling = SamplingConfig(seed=args.seed, top_k=100, cfg_scale=2.0)
    for c in range(model.cfg.num_classes):
        tokens = generate(model, torch.full((per_class,), c), sampling=sampling)
        with torch.no_grad():
            fake.update(features(tokenizer.decode(tokens)))
    row["fid_samples_vs_train_crops"] = frechet_distance(real.mean, real.covariance, fake.mean, fake.covariance)
    row["fid_protocol"] = {
        **features.protocol(),
        "samples": fake.count,
        "reference": f"the {real.count} built-in training crops",
        "size": SIZE,
        "sampling": "CFG 2.0, top-k 100, temperature 1, one batch per class",
        "tokenizer": args.tokenizer,
    }
    (run / "quality.json").write_text(json.dumps(row, indent=1) + "\n")
    print(json.dumps({k: v for k, v in row.items() if k != "fid_protocol"}))


def report(args: argparse.Namespace) -> None:
    work = Path(args.work)
    runs = []
    for folder in sorted(work.glob("s*_seed*")):
        row = json.loads((folder / "train.json").read_text())
        if (folder / "quality.json").is_file():
            row.update(json.loads((folder / "quality.json").read_text()))
        runs.append(row)
    speed_rows = json.loads((work / "speed.json").read_text()) if (work / "speed.json").is_file() else []
    floor = json.loads((work / "fid_floor.json").read_text()) if (work / "fid_floor.json").is_file() else {}
    out = {
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
        "runs": runs,
        "sampling": speed_rows,
        **floor,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    for r in runs:
        print(
            f"| {r['window']} | {r['seed']} | {r['steps']} | {r['train_tokens_per_s']:.0f} | "
            f"{r.get('nll_train_class', float('nan')):.3f} | {r.get('nll_train_null', float('nan')):.3f} | "
            f"{r.get('nll_heldout_null', float('nan')):.3f} | {r.get('fid_samples_vs_train_crops', float('nan')):.1f} |"
        )
    print(floor)
    for r in speed_rows:
        print(f"| {r['batch']} | {r['cfg']} | {r['s1_images_per_s']} | {r['s2_images_per_s']} | {r['speedup']} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("stage", choices=["prepare", "train", "speed", "quality", "report"])
    p.add_argument("--work", required=True, help="folder for shards, runs and figures")
    p.add_argument("--tokenizer", help="the trained VQ demo tokenizer (vtok demo's run/final)")
    p.add_argument("--window", type=int, choices=[1, 2], default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=120.0, help="training seconds (wall clock)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "shuffle.json"))
    args = p.parse_args()
    {"prepare": prepare, "train": train, "speed": speed, "quality": quality, "report": report}[args.stage](args)


if __name__ == "__main__":
    main()
