"""Codebook collapse at the quantizer defaults: the same CNN, data and optimiser, four quantizers.

    python benchmarks/bench_collapse.py [--rows vqtorch,kmeans_dead2,old_defaults,defaults]
                                        [--steps 300] [--seed 0] [--work runs/collapse] [--out benchmarks/collapse.json]

A VQGAN CNN (ch 64, 1-2-2-4, 1 residual block, attention at the lowest level, z 128: 13.3M parameters, f8) on
random 64 px crops of the built-in photographs (batch 16), AdamW 1e-4 with betas
(0.9, 0.95), no weight decay, no warmup, no weight EMA, L2 + quantizer losses, a
1024-code codebook of dim 8, trained through ``vtok train``'s own trainer. At
steps 100 and 300 the raw weights are scored on the 52 held-out crops: PSNR and
the codes in use. Rows ending in ``_b4`` train at batch 4 (4x fewer images), where
an absolute dead-code threshold restarts codes that are merely rare.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from common import ROOT, psnr_cell
from vector_quantize_pytorch import VectorQuantize

import vtok
from vtok.config import AT_LEAST_1, ranged
from vtok.eval.heldout import crops, reconstruct
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.tokenizers.train import TokenizerTrainer

CNN = "{name: conv, ch: 64, ch_mult: [1, 2, 2, 4], num_res_blocks: 1, attn_levels: [-1], z_channels: 128}"
SETUP = [
    f"model.encoder={CNN}",
    f"model.decoder={CNN}",
    "train.lr=1e-4",
    "train.betas=[0.9,0.95]",
    "train.warmup_steps=0",
    "train.min_lr_ratio=1.0",
    "train.ema_decay=null",
    "train.log_every=100",
    "train.sample_every=100000",
    "train.save_every=100000",
    "data.crop_scale=null",
    "data.color_jitter=null",
    "data.random_crop=true",
]
Q = "model.quantizer"


@register("quantizer", "library_vq")
class LibraryVQ(Quantizer):
    """vector-quantize-pytorch's ``VectorQuantize`` as its README configures it, nothing of vtok's in between."""

    @dataclass
    class Config:
        dim: int = ranged(8, AT_LEAST_1)
        codebook_size: int = ranged(1024, AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        self.dim, self.codebook_sizes = cfg.dim, (cfg.codebook_size,)
        self.vq = VectorQuantize(
            dim=cfg.dim,
            codebook_size=cfg.codebook_size,
            use_cosine_sim=True,
            kmeans_init=True,
            decay=0.99,
            threshold_ema_dead_code=2,
        )

    def forward(self, latents: torch.Tensor) -> QuantizerOutput:
        z_q, ids, commit = self.vq(latents.float())
        return QuantizerOutput(z_q, ids.unsqueeze(-1), {"commit": commit.reshape(())})

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        return self.vq.get_output_from_indices(ids[..., 0])


# name -> (what, quantizer, extra overrides)
ROWS: dict[str, tuple[str, str, list[str]]] = {
    "vqtorch": (
        "vector-quantize-pytorch VectorQuantize (cosine, k-means init, EMA 0.99, dead-code 2)",
        "{name: library_vq, dim: 8, codebook_size: 1024}",
        [],
    ),
    "kmeans_dead2": (
        "vtok vq, k-means init + dead-code 2 (absolute)",
        "{name: vq, dim: 8, codebook_size: 1024, kmeans_init: true, dead_code_threshold: 2.0}",
        [],
    ),
    "old_defaults": (
        "vtok vq, the former defaults (no k-means init, no restarts)",
        "{name: vq, dim: 8, codebook_size: 1024, kmeans_init: false, dead_code_share: 0.0}",
        [],
    ),
    "defaults": (
        "vtok vq defaults (k-means init, restarts under 1.0 x mean use)",
        "{name: vq, dim: 8, codebook_size: 1024}",
        [],
    ),
    **{
        f"share_{share}": (
            f"vtok vq, k-means init, restart under {share} x mean use",
            f"{{name: vq, dim: 8, codebook_size: 1024, dead_code_share: {share}}}",
            [],
        )
        for share in (0.5, 1.0, 2.0)
    },
    "kmeans_dead2_b4": (
        "vtok vq, k-means init + dead-code 2 (absolute), batch 4",
        "{name: vq, dim: 8, codebook_size: 1024, kmeans_init: true, dead_code_threshold: 2.0}",
        ["train.batch_size=4"],
    ),
    "defaults_b4": ("vtok vq defaults, batch 4", "{name: vq, dim: 8, codebook_size: 1024}", ["train.batch_size=4"]),
}


class ScoredTrainer(TokenizerTrainer):
    """Scores the raw weights on held-out crops at each logged step."""

    heldout: torch.Tensor
    scores: dict[int, dict[str, Any]]

    @torch.no_grad()
    def on_logged(self, record: dict[str, Any]) -> None:
        super().on_logged(record)
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        held = reconstruct(model, self.heldout)
        self.scores[self.step] = {
            "heldout_psnr": psnr_cell(held),
            "codes_used": held.codes_used(),
            "train_loss": round(float(record.get("loss", record.get("total", float("nan")))), 5),
        }


def run_row(name: str, steps: int, seed: int, work: Path, heldout: torch.Tensor) -> dict[str, Any]:
    _, quantizer, extra = ROWS[name]
    preset = ROOT / "configs" / "tokenizer" / "vq_demo.yaml"
    cfg = vtok.load_config(preset, [*SETUP, f"{Q}={quantizer}", *extra, f"train.steps={steps}", f"train.seed={seed}"])
    trainer = ScoredTrainer(cfg, work / key(name, seed), progress=False)
    trainer.heldout, trainer.scores = heldout, {}
    params = sum(p.numel() for p in trainer.accelerator.unwrap_model(trainer.model).parameters())
    started = time.perf_counter()
    trainer.train()
    return {
        "params_m": round(params / 1e6, 2),
        "seconds": round(time.perf_counter() - started, 1),
        "at_step": {str(k): v for k, v in sorted(trainer.scores.items())},
    }


def key(name: str, seed: int) -> str:
    return name if seed == 0 else f"{name}_s{seed}"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="rows of another seed are kept as NAME_sSEED")
    p.add_argument("--work", default=str(ROOT / "runs" / "collapse"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "collapse.json"))
    args = p.parse_args()
    torch.manual_seed(0)
    heldout = crops("heldout", 64)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report["setup"] = {
        "steps": args.steps,
        "overrides": SETUP,
        "heldout_crops": len(heldout),
        "torch": torch.__version__,
    }
    rows = report.setdefault("rows", {})
    for name in args.rows.split(","):
        work, row = Path(args.work), key(name, args.seed)
        # A fresh run every time: a resumed run would skip the steps it scores.
        shutil.rmtree(work / row, ignore_errors=True)
        rows[row] = {"what": ROWS[name][0], "seed": args.seed, **run_row(name, args.steps, args.seed, work, heldout)}
        print(row, rows[row], flush=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    print_table(report)


def print_table(report: dict) -> None:
    steps = sorted({int(s) for row in report["rows"].values() for s in row["at_step"]})
    head = " | ".join(f"PSNR @{s} | codes @{s}" for s in steps)
    print(f"| row | quantizer | {head} | s |")
    print("|---|---|" + "---|---|" * len(steps) + "---|")
    for name, row in report["rows"].items():
        cells = []
        for s in steps:
            r = row["at_step"].get(str(s))
            cells += [f"{r['heldout_psnr']:.2f} dB", str(r["codes_used"])] if r else ["-", "-"]
        print(f"| {name} | {row['what']} | {' | '.join(cells)} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
