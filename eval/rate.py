"""Rate-distortion of variable-length tokenizers: every metric at several token budgets, as JSON and a plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vtok.errors import VtokError
from vtok.eval.evaluate import IMAGE_METRICS, evaluate
from vtok.interfaces import Tokenizer
from vtok.io import atomic_path, dumps_json
from vtok.pipeline import reconstruct_with


def rate_distortion(
    tokenizer: Tokenizer,
    token_counts: Sequence[int],
    metrics: Sequence[str] = ("psnr", "ssim"),
    data: str = "builtin",
    resolution: int = 256,
    batch_size: int = 16,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One row per budget k: ``{"tokens": k, column: value, ...}`` with images encoded to k tokens."""
    metrics = [m for m in metrics if m in IMAGE_METRICS]
    if not metrics:
        raise VtokError(f"a rate-distortion sweep needs image metrics ({', '.join(IMAGE_METRICS)})")
    rows = []
    for k in sorted(set(token_counts)):
        result = evaluate(
            metrics,
            data,
            reconstruct=reconstruct_with(tokenizer, k),
            resolution=resolution,
            batch_size=batch_size,
            progress=progress,
        )
        rows.append({"tokens": k, **{c: v for s in result.scores.values() for c, v in s.items()}})
    return rows


def write_rate_distortion(rows: list[dict[str, Any]], out: str | Path, name: str) -> None:
    """``rate_distortion.json`` and ``rate_distortion.png`` (one panel per column against tokens) in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "rate_distortion.json") as tmp:
        Path(tmp).write_text(dumps_json({"name": name, "rows": rows}, indent=2, default=float) + "\n")
    columns = [c for c in rows[0] if c != "tokens" and not c.endswith("_std")]
    fig, axes = plt.subplots(1, len(columns), figsize=(4 * len(columns), 3.2), squeeze=False)
    for ax, col in zip(axes[0], columns, strict=True):
        points = [(r["tokens"], r[col]) for r in rows if math.isfinite(r[col])]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("tokens per image")
        ax.set_title(col)
        ax.grid(alpha=0.3)
    fig.suptitle(name)
    fig.tight_layout()
    with atomic_path(out / "rate_distortion.png") as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
