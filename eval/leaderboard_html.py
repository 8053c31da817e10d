"""The leaderboard's picture page: ``leaderboard.html``, each image's crops side by side across methods.

One table per data set: a row per image (the first ``--crops`` of the set), a column per
method that ran (the original first), the crops ``crops/<set>/<image>_<method>.png`` written
while the methods were scored. The page is self-contained apart from those PNGs and links
nowhere else.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from vtok.io import atomic_path

_STYLE = """
body { font-family: sans-serif; margin: 1em; }
table { border-collapse: collapse; }
th, td { padding: 3px; text-align: center; font-size: 11px; vertical-align: top; }
th { max-width: 140px; }
img { width: 128px; height: 128px; image-rendering: pixelated; }
"""


def _header(row: dict[str, Any]) -> str:
    bits = "continuous" if row.get("bits") is None else f"{row['bits']:.0f} bits"
    psnr = row.get("scores", {}).get("PSNR")
    extra = f"<br>{psnr:.2f} dB" if isinstance(psnr, float) else ""
    return f"<th>{html.escape(row['method'])}<br>{bits}{extra}</th>"


def page(report: dict[str, Any]) -> str:
    """The HTML text of the page."""
    parts = ["<!doctype html>", "<meta charset='utf-8'>", "<title>vtok bench</title>", f"<style>{_STYLE}</style>"]
    parts.append(f"<h1>vtok bench at {report['setting']['resolution']} px</h1>")
    for data, summary in report["sets"].items():
        rows = [r for r in summary["rows"] if any(r.get("crops") or [])]
        parts.append(f"<h2>{html.escape(data)}</h2>")
        if not rows:
            parts.append("<p>No method produced reconstructions on this set.</p>")
            continue
        parts.append("<table><tr><th>original</th>" + "".join(_header(r) for r in rows) + "</tr>")
        for i in range(max(len(r["crops"]) for r in rows)):
            crops = [r["crops"][i] if i < len(r["crops"]) else None for r in rows]
            known = next((c for c in crops if c), None)
            if known is None:
                continue
            original = html.escape(str(Path(known).parent / f"{i:03d}_original.png"))
            cells = [f"<td><img src='{original}' alt='original {i}'></td>"]
            for r, crop in zip(rows, crops, strict=True):
                alt = html.escape(f"{r['method']} {i}")
                cells.append(f"<td><img src='{html.escape(crop)}' alt='{alt}'></td>" if crop else "<td>refused</td>")
            parts.append("<tr>" + "".join(cells) + "</tr>")
        parts.append("</table>")
        not_run = [r for r in summary["rows"] if "reason" in r]
        if not_run:
            parts.append(
                "<ul>"
                + "".join(f"<li>{html.escape(r['method'])}: {html.escape(r['reason'])}</li>" for r in not_run)
                + "</ul>"
            )
    return "\n".join(parts) + "\n"


def write_html(report: dict[str, Any], out: str | Path) -> Path:
    """Write ``leaderboard.html`` into ``out`` (atomically); the crops are already there."""
    path = Path(out) / "leaderboard.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page(report))
    return path
