"""What the benchmarks share beyond the library: the built-in crops by split, and their table cells.

Scoring itself is the library's (:mod:`vtok.eval.heldout`, :mod:`vtok.eval.baselines`); this
module only fixes how the benchmark tables split and round it. Imported by scripts run as
``python benchmarks/bench_*.py`` (their folder is on the path).
"""

from __future__ import annotations

from pathlib import Path

import torch

from vtok.eval.heldout import Reconstruction, crops

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ROOT / "configs" / "tokenizer"


def crop_splits(size: int) -> dict[str, torch.Tensor]:
    """{"train": the 182 training crops, "heldout": the 52 held-out crops}, (N, 3, size, size) in [-1, 1]."""
    return {split: crops(split, size) for split in ("train", "heldout")}


def psnr_cell(rec: Reconstruction) -> float:
    """Mean PSNR in dB, to 3 decimals."""
    return round(rec.psnr(), 3)


def color_error_cell(rec: Reconstruction) -> float:
    """The largest per-channel color cast (|mean of reconstruction - original|, [-1, 1] units), to 4 decimals."""
    return round(float(rec.color_error().abs().max()), 4)
