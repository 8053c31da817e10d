"""The semantic regulariser's effect at equal budget: reconstruction, a linear probe, and the AR model's loss.

    python benchmarks/bench_semantic.py [--steps 800] [--gpt-steps 400] [--seeds 0,1]
                                        [--work runs/codes] [--out benchmarks/semantic.json]

Two tokenizers a seed, trained alike (``vq_demo.yaml`` at the recipe study's budget,
800 steps x batch 16): without the regulariser (bench_codes.py's ``vq`` row, reused
from the same work folder) and with it (``vq_semantic_demo.yaml``: GigaTok's cosine
alignment of the decoder's residual stage with EfficientNet-Lite0, at GigaTok's weight 0.5 and
at 0.1). For each:

- held-out PSNR on the 52 held-out crops;
- a linear probe of the tokens: logistic regression on the flattened code vectors
  (``tokenizer.lookup``, 64 positions x 8) of the 182 training crops, the class
  being the photograph (14), fitted on 9 of each photograph's 13 windows and scored on
  the other 4 (and their mirror images);
- the demo GPT (``gpt_demo.yaml``, 400 steps at batch 32) trained on the tokens of
  the training crops and their flips, scored by its null-class (unconditional) loss
  per token on the training crops and on the 52 held-out crops, which it never saw.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import torch
from bench_codes import ROWS, score, train_row
from common import ROOT, crop_splits

import vtok
from vtok.builtin import photo_names
from vtok.eval.heldout import crops, named_crops

ROWS["vq_semantic"] = (
    "vq with GigaTok's regulariser (decoder stage -> EfficientNet-Lite0, cosine 0.5)",
    "vq_semantic_demo.yaml",
    [],
)
ROWS["vq_semantic_0.1"] = (
    "vq with GigaTok's regulariser at cosine weight 0.1",
    "vq_semantic_demo.yaml",
    ["loss.regularizer.cosine_weight=0.1"],
)
PROBE_TEST_WINDOWS = (0, 4, 8, 12)  # the whole photo, a 60% and two 35% windows


@torch.no_grad()
def probe(tok: vtok.Tokenizer) -> float:
    """Accuracy of a linear classifier of the photograph from the tokens' code vectors (see the module doc)."""
    from sklearn.linear_model import LogisticRegression

    classes = photo_names("train")
    names, images = named_crops("train", 64)
    images = torch.cat([images, images.flip(-1)])
    labels = np.array([classes.index(n.rsplit("_", 1)[0]) for n in names] * 2)
    window = np.array([int(n.rsplit("_", 1)[1]) for n in names] * 2)
    feats = tok.lookup(tok.encode(images)).flatten(1).numpy()  # (N, L * D)
    feats = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
    test = np.isin(window, PROBE_TEST_WINDOWS)
    clf = LogisticRegression(max_iter=2000, C=0.1).fit(feats[~test], labels[~test])
    return float((clf.predict(feats[test]) == labels[test]).mean())


def gpt_losses(tok_dir: Path, work: Path, seed: int, steps: int) -> dict[str, float]:
    """Train the demo GPT on the tokenizer's tokens; its null-class loss on training and held-out crops."""
    from vtok.ar_models.train import train_ar
    from vtok.shards import write_shards

    tok = vtok.load(tok_dir).eval()
    shards = work / "tokens"
    write_shards(tok, "builtin", 64, shards, shard_size=1000, progress=False, tokenizer_dir=tok_dir)
    cfg = vtok.load_config(
        ROOT / "configs" / "ar" / "gpt_demo.yaml",
        [f"data.source={shards}", f"train.steps={steps}", f"train.seed={seed}", "train.sample_every=100000"],
    )
    gpt = vtok.load(train_ar(cfg, work / "gpt", progress=False)).eval()
    out = {}
    with torch.no_grad():
        for split in ("train", "heldout"):
            ids = tok.encode(crops(split, 64)).ids
            null = torch.full((len(ids),), gpt.cfg.num_classes)
            loss, _ = gpt(ids, null)
            out[f"gpt_null_loss_{split}"] = round(float(loss), 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--gpt-steps", type=int, default=400)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--rows", default="vq,vq_semantic,vq_semantic_0.1")
    p.add_argument("--work", default=str(ROOT / "runs" / "codes"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "semantic.json"))
    args = p.parse_args()
    splits = crop_splits(64)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report["budget"] = {"tokenizer_steps": args.steps, "gpt_steps": args.gpt_steps}
    rows = report.setdefault("rows", {})
    for name in args.rows.split(","):
        per_seed = rows.get(name, {}).get("seeds", {})
        for seed in (int(s) for s in args.seeds.split(",")):
            if str(seed) in per_seed:
                continue
            final, _ = train_row(name, seed, args.steps, Path(args.work))  # resumes (no steps left) if trained
            tok = vtok.load(final).eval()
            row = {k: v for k, v in score(tok, splits).items() if k in ("heldout_psnr", "train_psnr", "usage")}
            row["probe_accuracy"] = round(probe(tok), 4)
            row.update(gpt_losses(final, Path(args.work) / f"{name}_s{seed}_ar", seed, args.gpt_steps))
            per_seed[str(seed)] = row
            print(name, seed, row, flush=True)
        mean = {k: round(statistics.mean(r[k] for r in per_seed.values()), 4) for k in next(iter(per_seed.values()))}
        rows[name] = {"what": ROWS[name][0], "seeds": per_seed, "mean": mean}
        out.write_text(json.dumps(report, indent=1) + "\n")
    print("| tokenizer | seed | held-out PSNR | probe accuracy | GPT null loss, train crops | held-out crops |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        for seed, r in row["seeds"].items():
            print(
                f"| {name} | {seed} | {r['heldout_psnr']:.2f} | {r['probe_accuracy']:.1%} | "
                f"{r['gpt_null_loss_train']:.3f} | {r['gpt_null_loss_heldout']:.3f} |"
            )


if __name__ == "__main__":
    main()
