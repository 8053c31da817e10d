"""Evaluation reports: ``results.json`` (scores + protocols), ``results.md`` (leaderboard layout), pictures."""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont

from vtok.eval.evaluate import EvalResult
from vtok.images import make_grid, save_image
from vtok.io import atomic_path, dumps_json

# Leaderboard column order; columns of metrics that did not run are left out.
_ORDER = (
    "gfid",
    "gfd_effnet_lite0",
    "rfid",
    "psnr",
    "ssim",
    "lpips",
    "fd_effnet_lite0",
    "codebook",
    "text",
    "face",
    "cer",
    "wer",
)
_TEXT_KEYS = ("T-ACC", "T-NED")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def summary_columns(result: EvalResult) -> dict[str, Any]:
    """The headline columns in leaderboard order: per-bin and mean text/face scores, counts left out."""
    cols: dict[str, Any] = {}
    for metric in _ORDER:
        for key, value in result.scores.get(metric, {}).items():
            if metric in ("text", "face") and (key.startswith(("words", "faces")) or key.endswith("original")):
                continue
            if metric == "codebook" and key.startswith("entropy"):
                continue
            if metric in ("cer", "wer") and (key == "pages" or "original_truth" in key):
                continue  # the reader's own floor and the count stay in results.json
            cols[key] = value
    return cols


def markdown(result: EvalResult, name: str) -> str:
    cols = summary_columns(result)
    lines = [f"# vtok eval: {name}", ""]
    if cols:
        lines += ["| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["| " + name + " | " + " | ".join(_fmt(v) for v in cols.values()) + " |", ""]
    info = ", ".join(f"{k}: {v}" for k, v in result.info.items() if k not in ("per_image", "refused"))
    lines += [f"Setting: {info}.", ""]
    for size, reason in result.info.get("refused", {}).items():
        lines.append(f"- refused at {size}: {reason}")
    lines += _pinned_lines(result) + _published_lines(result)
    for metric, protocol in result.protocols.items():
        lines.append(f"- **{metric}**: " + "; ".join(f"{k}: {v}" for k, v in protocol.items()))
    for metric, reason in result.skipped.items():
        lines.append(f"- **{metric}** skipped: {reason}")
    for metric in ("text", "face"):
        counts = {k: v for k, v in result.scores.get(metric, {}).items() if k.startswith(("words", "faces"))}
        if counts:
            lines.append(f"- {metric} instances: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines) + "\n"


def _pinned_lines(result: EvalResult) -> list[str]:
    """The pinned protocol's choices, one per line."""
    if not result.pinned:
        return []
    lines = [f"## Protocol {result.pinned['name']}", ""]
    lines += [f"- {k}: {v}" for k, v in result.pinned.items() if k != "name"]
    return lines + [""]


def _published_lines(result: EvalResult) -> list[str]:
    """The known release's published figures beside the measured ones."""
    pub = result.published
    if not pub:
        return []
    lines = [f"## Published figures: {pub['checkpoint']}", ""]
    lines += [f"Source: {pub['repo']} `{pub['file']}`, sha256 {pub['sha256']} ({pub['sha256_from']}).", ""]
    lines += ["| metric | measured | published | comparable | published protocol | cite |", "|---" * 6 + "|"]
    for r in pub["rows"]:
        measured = "not run" if r["measured"] is None else _fmt(r["measured"])
        cells = [r["metric"], measured, _fmt(r["published"]), r["comparable"], r["published_protocol"], r["cite"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return lines + [""]


def _font(size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def side_by_side(pairs: list[tuple[str, Image.Image, Image.Image]], height: int = 64) -> Image.Image:
    """Rows of (caption, original crop, reconstruction crop), each crop scaled to ``height``."""
    font = _font(14)
    rows = []
    for caption, a, b in pairs:
        scale = height / max(a.height, 1)
        size = (max(1, round(a.width * scale)), height)
        rows.append((caption, a.resize(size, Image.NEAREST), b.resize(size, Image.NEAREST)))
    width = max([20 + 2 * r[1].width + 10 for r in rows] + [420])
    canvas = Image.new("RGB", (width, max(1, len(rows)) * (height + 26) + 4), "white")
    draw = ImageDraw.Draw(canvas)
    y = 4
    for caption, a, b in rows:
        draw.text((6, y), caption, fill="black", font=font)
        canvas.paste(a, (6, y + 20))
        canvas.paste(b, (16 + a.width, y + 20))
        y += height + 26
    return canvas


def _save_pil(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def write_report(result: EvalResult, out: str | Path, name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write results.json, results.md and the pictures into ``out``; returns the JSON object."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "name": name,
        "setting": result.info,
        "scores": result.scores,
        "protocol": result.protocols,
        "skipped": result.skipped,
        **({"pinned_protocol": result.pinned} if result.pinned else {}),
        **({"published": result.published} if result.published else {}),
        "machine": f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
        **(extra or {}),
    }
    with atomic_path(out / "results.json") as tmp:
        Path(tmp).write_text(dumps_json(report, indent=2, default=float) + "\n")
    with atomic_path(out / "results.md") as tmp:
        Path(tmp).write_text(markdown(result, name))
    if result.grid is not None:
        real, fake = result.grid
        save_image(make_grid(torch.cat([real, fake]), ncol=len(real)), out / "recon_grid.png")
    if result.worst_text:
        rows = [(f"{r.gt!r} read as {r.pred!r} (ratio {r.ratio:.3f})", a, b) for r, a, b in result.worst_text]
        _save_pil(side_by_side(rows), out / "worst_text.png")
    if result.worst_faces:
        rows = [(f"{r.image}: {r.value:.3f} (ratio {r.ratio:.3f})", a, b) for r, a, b in result.worst_faces]
        _save_pil(side_by_side(rows, height=96), out / "worst_faces.png")
    return report


def table(result: EvalResult) -> str:
    """The headline columns as an aligned two-column table for the terminal."""
    cols = summary_columns(result)
    width = max([len(k) for k in cols] + [1])
    lines = [f"  {k:<{width}}  {_fmt(v)}" for k, v in cols.items()]
    lines += [f"  {k:<{width}}  skipped: {v}" for k, v in result.skipped.items()]
    if result.pinned:
        lines.append(f"  protocol {result.pinned['name']}: {result.pinned['images']} images, {result.pinned['subset']}")
    if result.published:
        lines.append(f"  known release {result.published['checkpoint']} ({result.published['file']}):")
        for r in result.published["rows"]:
            measured = "not run" if r["measured"] is None else _fmt(r["measured"])
            lines.append(
                f"    {r['metric']}: measured {measured}, published {_fmt(r['published'])} ({r['cite']}); "
                f"comparable: {r['comparable']}"
            )
    return "\n".join(lines)
