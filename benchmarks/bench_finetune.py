"""Fine-tuning a tokenizer on new images: gained on the new, lost on the old, decoder-only against whole model.

    python benchmarks/bench_finetune.py [--base-steps 1500] [--steps 400] [--work runs/finetune]
                                        [--out benchmarks/finetune.json]

The built-in photographs are split by content: "old" (colour photographs) and "new"
(grayscale photographs and textures), each with held-out photographs no run trains on.
A demo tokenizer (``vq_demo.yaml`` without colour jitter) trains on the old photographs;
it is then fine-tuned on the new ones through ``vtok train`` with
``train.init_from`` and the overlays in ``configs/finetune/`` (decoder only: encoder and
quantizer frozen; whole model), at a tenth of the demo's peak lr. Held-out PSNR on
both subsets (13 fixed 64 px windows per photograph) before and after, and the share of
held-out ids that decoder-only fine-tuning changed (it must be 0).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from common import ROOT, psnr_cell

import vtok
from vtok.builtin import photo
from vtok.eval.heldout import reconstruct
from vtok.images import center_crop_arr, pil_to_tensor
from vtok.tokenizers.train import TokenizerTrainer

PRESET = ROOT / "configs" / "tokenizer" / "vq_demo.yaml"
OLD = {"train": ["astronaut", "coffee", "motorcycle_left", "hubble_deep_field", "china", "grace_hopper", "ihc",
                 "retina"], "heldout": ["chelsea", "flower", "rocket"]}  # fmt: skip
NEW = {"train": ["camera", "moon", "page", "brick", "grass"], "heldout": ["coins", "gravel"]}
RUNS = {  # name -> (overlay, overrides)
    "decoder_only": ("decoder.yaml", []),
    "whole_model": ("whole.yaml", []),
}
# The overlays' settings are for full-size models; at the demo's budget the peak lr is a tenth of the demo's and
# there is no GAN (the demo has none).
DEMO_FINETUNE = ["train.lr=2e-4", "train.warmup_steps=20", "loss.disc_start=100000", "train.sample_every=100000"]


def write_photos(names: list[str], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        photo(name).save(folder / f"{name}.png")
    return folder


def windows(names: list[str], size: int = 64) -> torch.Tensor:
    """13 fixed windows per photograph: the whole short side, 4 corners at 0.6, 8 at 0.35 on a grid."""
    crops = []
    for name in names:
        image = photo(name)
        w, h = image.size
        for frac, fx, fy in [(1.0, 0.5, 0.5), *[(0.6, x, y) for x in (0, 1) for y in (0, 1)],
                             *[(0.35, x, y) for x in (0.1, 0.5, 0.9) for y in (0.2, 0.8)], (0.35, 0.5, 0.5),
                             (0.6, 0.5, 0.5)]:  # fmt: skip
            side = round(min(w, h) * frac)
            left, top = round((w - side) * fx), round((h - side) * fy)
            crops.append(pil_to_tensor(center_crop_arr(image.crop((left, top, left + side, top + side)), size)))
    return torch.stack(crops)


@torch.no_grad()
def score(model_dir: Path, sets: dict[str, torch.Tensor]) -> dict[str, float]:
    tok = vtok.load(model_dir)
    return {name: psnr_cell(reconstruct(tok, x)) for name, x in sets.items()}


def train(overrides: list[str], run: Path, overlays: list[Path] = ()) -> tuple[Path, float]:
    cfg = vtok.load_config(PRESET, overrides, overlays)
    started = time.perf_counter()
    final = TokenizerTrainer(cfg, run, progress=False).train()
    return final, round(time.perf_counter() - started, 1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-steps", type=int, default=1500)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--work", default=str(ROOT / "runs" / "finetune"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "finetune.json"))
    args = p.parse_args()
    work = Path(args.work)
    old_dir, new_dir = write_photos(OLD["train"], work / "old"), write_photos(NEW["train"], work / "new")
    sets = {"old_heldout": windows(OLD["heldout"]), "new_heldout": windows(NEW["heldout"])}
    base, base_s = train(
        [f"data.source={old_dir}", "data.color_jitter=null", f"train.steps={args.base_steps}",
         "train.sample_every=100000"],
        work / "base",
    )  # fmt: skip
    report = {"base": {"steps": args.base_steps, "seconds": base_s, **score(base, sets)}, "runs": {}}
    base_ids = vtok.load(base).encode(sets["new_heldout"]).ids
    for name, (overlay, extra) in RUNS.items():
        overrides = [f"data.source={new_dir}", "data.color_jitter=null", f"train.init_from={base}",
                     f"train.steps={args.steps}", *DEMO_FINETUNE, *extra]  # fmt: skip
        final, seconds = train(overrides, work / name, [ROOT / "configs" / "finetune" / overlay])
        row = {"steps": args.steps, "seconds": seconds, **score(final, sets)}
        changed = (vtok.load(final).encode(sets["new_heldout"]).ids != base_ids).float().mean()
        row["ids_changed"] = round(float(changed), 4)
        report["runs"][name] = row
        print(name, row, flush=True)
    report["setup"] = {"old": OLD, "new": NEW, "finetune_overrides": DEMO_FINETUNE, "preset": PRESET.name}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    b = report["base"]
    print("| model | steps | old held-out PSNR | new held-out PSNR | new held-out ids changed | s |")
    print("|---|---|---|---|---|---|")
    print(
        f"| base (old photographs) | {b['steps']} | {b['old_heldout']:.2f} | {b['new_heldout']:.2f} | - | {b['seconds']:.0f} |"
    )
    for name, r in report["runs"].items():
        print(
            f"| {name} on new | +{r['steps']} | {r['old_heldout']:.2f} | {r['new_heldout']:.2f} | "
            f"{r['ids_changed']:.1%} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
