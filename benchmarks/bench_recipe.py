"""The recipe study: variants of the VQ demo recipe at one budget, read against the classic codecs.

    python benchmarks/bench_recipe.py [--steps 800] [--rows default,l1,...] [--work runs/recipe]
                                      [--out benchmarks/recipe.json]

Every row trains the same steps x batch x image size on the built-in photographs
(``vq_demo.yaml``, or the study's base, with the row's overrides, through ``vtok train``'s
own trainer) and is
scored on the 182 training crops and the 52 held-out crops: PSNR, held-out codebook
usage and the largest per-channel mean colour error on held-out crops. The classic
codecs at the same bits (k-means VQ of raw 8x8 patches fitted on the training stream,
block means with a 1024-colour palette, JPEG and WebP at the same bytes) are scored on
the same crops. Runs are kept in ``--work`` and reused when run again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from common import ROOT, color_error_cell, crop_splits, psnr_cell

import vtok
from vtok.config import AT_LEAST_1, ranged
from vtok.eval.baselines import classic_scores, training_stream
from vtok.eval.heldout import Reconstruction, reconstruct
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.tokenizers.train import TokenizerTrainer

PRESET = ROOT / "configs" / "tokenizer" / "vq_demo.yaml"
VQ = "model.quantizer"
WIDTH = ["model.encoder.width={w}", "model.decoder.width={w}"]
BLOCKS = ["model.encoder.num_blocks={n}", "model.decoder.num_blocks={n}"]


@register("quantizer", "continuous")
class Continuous(Quantizer):
    """No quantization: the continuous ceiling of a network at a budget (ids are all 0; nothing to decode)."""

    @dataclass
    class Config:
        dim: int = ranged(8, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        self.dim, self.codebook_sizes = cfg.dim, (1,)

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        return QuantizerOutput(latents.float(), torch.zeros(*latents.shape[:2], 1, dtype=torch.long))


# Every row but "default" changes one thing of the study's base: vq_demo.yaml with the codebook EMA decay
# and commitment weight the study started from (the default is the base with the winners of those two).
BASE = ["model.quantizer.decay=0.99", "model.quantizer.commitment_weight=0.25"]

# name -> (what it changes, overrides, seeds)
ROWS: dict[str, tuple[str, list[str], tuple[int, ...]]] = {
    "default": (
        "vtok's demo recipe (vq_demo.yaml): the base with codebook EMA decay 0.8 and commitment 1.0",
        [],
        (0, 1),
    ),
    "base": ("the study's base: vq_demo with codebook EMA decay 0.99 and commitment 0.25", [], (0, 1)),
    "jitter_weak": (
        "colour jitter [0.4, 0.4, 0.4, 0.1] (the 1D demo's; default [0.4, 0.6, 0.6, 0.5])",
        ["data.color_jitter=[0.4,0.4,0.4,0.1]"],
        (0, 1),
    ),
    "no_jitter": ("no colour jitter", ["data.color_jitter=null"], (0,)),
    "lr_1e-3": ("peak lr 1e-3 (default 2e-3)", ["train.lr=1e-3"], (0, 1)),
    "lr_4e-3": ("peak lr 4e-3", ["train.lr=4e-3"], (0, 1)),
    "no_warmup": ("no lr warmup (default 50 steps)", ["train.warmup_steps=0"], (0,)),
    "l1": ("L1 instead of L2", ["loss.l1_weight=1.0", "loss.l2_weight=0.0"], (0,)),
    "l2_perceptual": ("L2 + 0.1 x EfficientNet perceptual", ["loss.perceptual_weight=0.1"], (0,)),
    "no_weight_ema": ("released weights without EMA", ["train.ema_decay=null"], (0,)),
    "width_64": ("width 64 (default 128)", [o.format(w=64) for o in WIDTH], (0,)),
    "width_256": ("width 256", [o.format(w=256) for o in WIDTH], (0,)),
    "blocks_1": ("1 residual block per side (default 2)", [o.format(n=1) for o in BLOCKS], (0,)),
    "blocks_4": ("4 residual blocks per side", [o.format(n=4) for o in BLOCKS], (0,)),
    "refine_2": ("2 full-resolution refinement blocks", ["model.decoder.refine_blocks=2"], (0,)),
    "decay_0.8": ("codebook EMA decay 0.8 (vector-quantize-pytorch's default)", [f"{VQ}.decay=0.8"], (0, 1)),
    "commit_1.0": ("commitment weight 1.0 (vector-quantize-pytorch's default)", [f"{VQ}.commitment_weight=1.0"], (0,)),
    "no_kmeans": ("no k-means codebook init", [f"{VQ}.kmeans_init=false"], (0,)),
    "no_restart": ("no dead-code restart", [f"{VQ}.dead_code_threshold=0.0"], (0,)),
    "no_rotation": ("straight-through instead of the rotation trick", [f"{VQ}.rotation_trick=false"], (0,)),
    "dim_4": ("code dim 4 (default 8)", [f"{VQ}.dim=4"], (0,)),
    "dim_32": ("code dim 32", [f"{VQ}.dim=32"], (0,)),
    "cosine": ("l2-normalised (cosine) codes", [f"{VQ}.cosine=true"], (0,)),
    "fsq": ("FSQ 8x5x5x5 (1000 codes)", [f"{VQ}={{name: fsq, dim: 8, levels: [8, 5, 5, 5]}}"], (0,)),
    "llamagen_vq": (
        "published: LlamaGen's quantizer (l2 codes learned by gradient, beta 0.25, uniform init, no restarts)",
        [f"{VQ}={{name: vq_learned, dim: 8, codebook_size: 1024, l2_norm: true, beta: 0.25}}"],
        (0, 1),
    ),
    "vqtorch_defaults": (
        "published: vector-quantize-pytorch's defaults (Euclidean, EMA 0.8, no k-means, no restarts, commit 1.0)",
        [
            f"{VQ}={{name: vq, dim: 8, codebook_size: 1024, cosine: false, decay: 0.8, kmeans_init: false, "
            "dead_code_threshold: 0.0, commitment_weight: 1.0}"
        ],
        (0, 1),
    ),
    "continuous": ("no quantizer: the continuous ceiling", [f"{VQ}={{name: continuous, dim: 8}}"], (0, 1)),
    "vqgan_cnn": (
        "the VQGAN CNN of the earlier demo (conv, ch 32, 1-2-2-4, 3.3M) in place of the patch network",
        [
            "model.encoder={name: conv, ch: 32, ch_mult: [1, 2, 2, 4], num_res_blocks: 1, z_channels: 64}",
            "model.decoder={name: conv, ch: 32, ch_mult: [1, 2, 2, 4], num_res_blocks: 1, z_channels: 64}",
        ],
        (0,),
    ),
}


@torch.no_grad()
def score(tok: vtok.Tokenizer, splits: dict[str, torch.Tensor], continuous: bool) -> dict[str, float]:
    row = {}
    for split, images in splits.items():
        if continuous:  # nothing to decode from: the training pass's reconstruction in eval mode
            rec = Reconstruction(images, tok(images).recon.clamp(-1, 1))
        else:
            rec = reconstruct(tok, images)
        row[f"{split}_psnr"] = psnr_cell(rec)
        if split == "heldout":
            row["color_error"] = color_error_cell(rec)
            if rec.tokens is not None:
                row["usage"] = round(rec.codes_used() / tok.codebook_sizes[0], 3)
    return row


class NoSampleTrainer(TokenizerTrainer):
    """The continuous row has no tokens to decode a sample grid from."""

    def save_samples(self, count: int = 8) -> None:
        pass


def run_row(name: str, seed: int, steps: int, work: Path) -> dict[str, float]:
    _, overrides, _ = ROWS[name]
    overrides = overrides if name == "default" else [*BASE, *overrides]
    cfg = vtok.load_config(
        PRESET, [*overrides, f"train.steps={steps}", f"train.seed={seed}", "train.sample_every=100000"]
    )
    started = time.perf_counter()
    trainer = NoSampleTrainer if name == "continuous" else TokenizerTrainer
    final = trainer(cfg, work / f"{name}_s{seed}", progress=False).train()
    return {"seconds": round(time.perf_counter() - started, 1), "final": str(final)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--work", default=str(ROOT / "runs" / "recipe"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "recipe.json"))
    args = p.parse_args()
    cfg = vtok.load_config(PRESET)
    size, batch = cfg["data"]["image_size"], cfg["train"]["batch_size"]
    splits = crop_splits(size)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report.update(budget={"steps": args.steps, "batch_size": batch, "image_size": size}, preset=str(PRESET.name))
    if "codecs" not in report:
        # The classic codecs see what the tokenizer sees: 1024 images of its training stream.
        stream = training_stream(cfg["data"], seed=0)
        q = cfg["model"]["quantizer"]
        report["codecs"] = classic_scores(8, q["codebook_size"], 1, stream, splits)
        report["codecs"]["classic_vq_fixed_crops"] = classic_scores(8, q["codebook_size"], 1, splits["train"], splits)[
            "classic_vq"
        ]
    rows = report.setdefault("rows", {})
    for name in args.rows.split(","):
        what, overrides, seeds = ROWS[name]
        per_seed = rows.get(name, {}).get("seeds", {})
        for seed in seeds:
            if str(seed) in per_seed:
                continue
            result = run_row(name, seed, args.steps, Path(args.work))
            result.update(score(vtok.load(result.pop("final")), splits, name == "continuous"))
            per_seed[str(seed)] = result
            print(name, seed, result, flush=True)
        keys = next(iter(per_seed.values())).keys()
        mean = {k: round(statistics.mean(r[k] for r in per_seed.values()), 3) for k in keys}
        rows[name] = {"what": what, "overrides": overrides, "seeds": per_seed, "mean": mean}
        out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    print("| row | what | seeds | train PSNR | held-out PSNR | held-out usage | colour error | s / run |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in report["rows"].items():
        m = row["mean"]
        usage = f"{m['usage']:.1%}" if "usage" in m else "-"
        print(
            f"| {name} | {row['what']} | {len(row['seeds'])} | {m['train_psnr']:.2f} | {m['heldout_psnr']:.2f} | "
            f"{usage} | {m['color_error']:.3f} | {m['seconds']:.0f} |"
        )
    print("\n| classic codec at the same bits | train PSNR | held-out PSNR | held-out bytes |")
    print("|---|---|---|---|")
    for name, row in report["codecs"].items():
        size = f"{row['heldout_bytes']:.0f}" if "heldout_bytes" in row else f"{row.get('bits', 640) / 8:.0f}"
        print(f"| {name} | {row['train']:.2f} | {row['heldout']:.2f} | {size} |")


if __name__ == "__main__":
    main()
