"""The leaderboard's rate-distortion plot: PSNR, LPIPS (where it ran) and rFID against bits per image.

One row of panels per data set. Variable-length tokenizers and the codecs are curves over
their rates; a fixed-rate tokenizer is a point; a continuous reference is a dashed line
(it has no bits per image).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vtok.io import atomic_path

PLOTTED = ("PSNR", "LPIPS", "rFID")  # the columns drawn, where a set has them
_CODEC_STYLE = {"classic_vq": ("tab:gray", "s"), "jpeg": ("tab:brown", "^"), "webp": ("tab:olive", "v")}


def _curves(rows: list[dict[str, Any]], column: str) -> dict[str, tuple[str, list[tuple[float, float]]]]:
    """{curve: (kind, [(bits, value), ...] sorted by bits)} of the scored rows that have ``column``."""
    curves: dict[str, tuple[str, list[tuple[float, float]]]] = {}
    for r in rows:
        value = r.get("scores", {}).get(column)
        if value is None or not math.isfinite(value):
            continue
        kind, points = curves.setdefault(r["curve"], (r["kind"], []))
        points.append((r["bits"] if r["bits"] is not None else math.nan, value))
    return {name: (kind, sorted(points)) for name, (kind, points) in curves.items()}


def write_plot(report: dict[str, Any], path: str | Path) -> list[str]:
    """Draw the plot into ``path`` (PNG, atomically); returns the columns drawn (none: no file is written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = report["sets"]
    columns = [c for c in PLOTTED if any(c in r.get("scores", {}) for s in sets.values() for r in s["rows"])]
    if not columns:
        return []
    fig, axes = plt.subplots(
        len(sets), len(columns), figsize=(4.2 * len(columns), 3.4 * len(sets)), squeeze=False, dpi=90
    )
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    tokenizer_colour: dict[str, str] = {}
    for (data, summary), panel in zip(sets.items(), axes, strict=True):
        for ax, column in zip(panel, columns, strict=True):
            for name, (kind, points) in _curves(summary["rows"], column).items():
                if kind == "reference":
                    ax.axhline(points[0][1], color="black", linestyle="--", linewidth=1, label=f"{name} (continuous)")
                    continue
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                if kind == "codec":
                    colour, marker = _CODEC_STYLE.get(name, ("tab:gray", "x"))
                    ax.plot(xs, ys, color=colour, marker=marker, linestyle=":", markersize=5, label=name)
                else:
                    colour = tokenizer_colour.setdefault(name, next(colours))
                    style = "-" if len(points) > 1 else "none"
                    ax.plot(xs, ys, color=colour, marker="o", linestyle=style, markersize=7, label=name)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("bits per image")
            ax.set_title(f"{column} ({data})" if len(sets) > 1 else column)
            ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.tight_layout()
    fig.legend(handles.values(), handles.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return columns
