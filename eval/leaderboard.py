"""``vtok bench``: several tokenizers, the classic codecs at their bits and a continuous reference, in one table.

For each data set every method is scored by :func:`vtok.eval.evaluate.evaluate` with the
same metrics, images and resolution, so a row means what ``vtok eval`` would print for that
method. Rows are written as they finish (``rows/*.json`` in the output folder, keyed by
what the scores depend on), so a run stopped half way resumes where it stopped. The results
are ``leaderboard.json``, ``leaderboard.md``, ``rate_distortion.png`` and
``leaderboard.html`` with its ``crops/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vtok.errors import VtokError, one_line
from vtok.eval.evaluate import _image_items, evaluate, parse_metrics
from vtok.eval.leaderboard_methods import (
    FIT_IMAGES,
    FIT_PRESET,
    AtBytes,
    ClassicVQCache,
    Method,
    classic_vq_method,
    codec_method,
    codec_rates,
    fit_data,
    tokenizer_methods,
)
from vtok.eval.report import summary_columns
from vtok.images import pil_to_tensor, save_image
from vtok.interfaces import Tokenizer
from vtok.io import atomic_path, dumps_json
from vtok.streaming import ImageFiles

# Table headers of metrics whose column did not run (skipped metrics have no scores to name them).
_HEADERS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "rfid": "rFID"}


def codec_protocol(fit_images: int) -> dict[str, str]:
    """How the rates and the codecs of a leaderboard are defined (written into ``leaderboard.json`` and ``.md``)."""
    return {
        "bits": "tokenizers: token positions (the valid prefix for 1D) x sum of log2(codebook size) over the codes "
        "of a position; codecs: what they spent (JPEG/WebP: mean file bytes x 8)",
        "classic_vq": f"k-means (scikit-learn, k-means++) of raw RGB patches, fitted on {fit_images} images of the "
        f"training stream of the {FIT_PRESET} preset ({fit_data()}); a grid tokenizer's own patch, codebook and depth where its codes "
        "share one codebook of at most 1024, else the patch with whole bits nearest to 8-20 bits a patch, residual "
        "levels of at most 10 bits",
        "jpeg/webp": "PIL, each image at the highest quality whose file fits the tokenizer's bytes (quality 1 where "
        "none does: then the row spends more than the tokenizer)",
    }


@dataclass
class Bench:
    """What every row of one leaderboard shares."""

    metrics: list[str] | None  # None: each set's :func:`default_metrics`
    resolution: int
    out: Path
    batch_size: int = 16
    device: str = "cpu"
    crops: int = 16
    progress: bool = True
    fit_images: int = FIT_IMAGES  # training images classic VQ is fitted on


def slug(text: str) -> str:
    """A file-name-safe form of a row or set name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:80] or "x"


class _Capture:
    """A reconstruct function that keeps the first ``n`` (original, reconstruction) pairs for the crops page,
    by the index of the image in the set (an image the method refused leaves its place empty)."""

    def __init__(self, run: Any, n: int):
        self.run, self.n = run, n
        self.seen = 0
        self.pairs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        start = self.seen
        self.seen += len(images)
        recon = self.run(images)
        for i in range(max(0, min(len(images), self.n - start))):
            self.pairs[start + i] = (images[i].cpu(), recon[i].cpu())
        return recon


def probe(data: str, resolution: int) -> torch.Tensor:
    """What the rates are counted on: (1, 3, R, R) in [-1, 1], the set's first image as the image metrics see it
    (VTBench's sets: its R x R centre crop, the size of a tile; their other sizes are checked as they are fed)."""
    from vtok.eval.vtbench import is_vtbench_data, load_source
    from vtok.eval.vtbench_sets import cover_crop

    if is_vtbench_data(data):
        return pil_to_tensor(cover_crop(load_source(data, resolution).items[0].image, resolution, resolution))[None]
    items = _image_items(data, resolution)
    return ImageFiles([items[0][1]], resolution, strict=True).load(0)[None]


def default_metrics(data: str) -> list[str]:
    """The metrics a set is scored on when none are given: the image metrics, and whole-image OCR CER/WER
    (instead of rFID, which a handful of pages cannot estimate) on VTBench's text sets."""
    from vtok.eval.vtbench_sets import TEXT_SETS, set_key

    if set_key(data) in TEXT_SETS:
        return ["psnr", "ssim", "lpips", "cer", "wer"]
    return ["psnr", "ssim", "lpips", "rfid"]


def set_metrics(data: str, bench: Bench) -> list[str]:
    return bench.metrics if bench.metrics is not None else default_metrics(data)


def _cache_key(method: Method, data: str, bench: Bench) -> str:
    text = f"{method.key}|{data}|{bench.resolution}|{','.join(set_metrics(data, bench))}"
    if method.kind == "codec" and method.name.startswith("classic_vq"):
        text += f"|fit {bench.fit_images}"  # a classic codec fitted on other images is another codec
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def score(method: Method, data: str, bench: Bench) -> dict[str, Any]:
    """One row: the method's scores on ``data`` (read from ``rows/`` when an earlier run scored it alike)."""
    row: dict[str, Any] = {"method": method.name, "kind": method.kind, "curve": method.curve, "bits": method.bits}
    row.update(tokens=method.tokens, **method.info)
    if method.reconstruct is None:
        return {**row, "reason": method.reason}
    cache = bench.out / "rows" / slug(data) / f"{slug(method.name)}.json"
    key = _cache_key(method, data, bench)
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
            if saved.get("key") == key:
                return saved["row"]
        except (OSError, ValueError):
            pass  # an unreadable cache entry is scored again
    capture = _Capture(method.reconstruct, bench.crops)
    started = time.perf_counter()
    try:
        result = evaluate(
            set_metrics(data, bench),
            data,
            reconstruct=capture,
            resolution=bench.resolution,
            batch_size=bench.batch_size,
            detail_dir=bench.out / "detail_set",
            device=bench.device,
            progress=False,
        )
    except (VtokError, RuntimeError, ValueError) as err:
        text = str(err).strip().splitlines()
        return {**row, "reason": one_line(text[0] if text else type(err).__name__)}
    if isinstance(method.reconstruct, AtBytes):
        row["bits"] = method.reconstruct.spent_bits()
        row["target_bits"] = method.bits
        row["qualities"] = _spread(method.reconstruct.qualities)
        row["at_floor"] = method.reconstruct.at_floor()
    row["scores"] = summary_columns(result)
    row["skipped"] = result.skipped
    if result.info.get("refused"):  # VTBench's sets: sizes this method could not take, with the reason
        row["refused"] = result.info["refused"]
        if not row["scores"]:
            size, why = next(iter(result.info["refused"].items()))
            row["reason"] = f"cannot take {size} images: {why}"
    row["protocols"] = result.protocols
    row["images"] = result.info.get("images")
    row["seconds"] = round(time.perf_counter() - started, 1)
    row["crops"] = _save_crops(capture, data, method.name, bench.out)
    with atomic_path(cache) as tmp:
        tmp.write_text(dumps_json({"key": key, "row": row}, indent=1, default=float) + "\n")
    return row


def _spread(values: list[int]) -> dict[str, int]:
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]} if ordered else {}


def _save_crops(capture: _Capture, data: str, name: str, out: Path) -> list[str | None]:
    """The kept reconstructions (and, once per set, the originals) as PNGs under ``crops/``; their paths by
    image index (None where the method refused the image)."""
    folder = out / "crops" / slug(data)
    paths: list[str | None] = [None] * (max(capture.pairs) + 1 if capture.pairs else 0)
    for i, (x, y) in sorted(capture.pairs.items()):
        original = folder / f"{i:03d}_original.png"
        if not original.is_file():
            save_image(x, original, "leaderboard crop")
        path = folder / f"{i:03d}_{slug(name)}.png"
        save_image(y, path, "leaderboard crop")
        paths[i] = str(path.relative_to(out))
    return paths


def set_methods(
    tokenizers: list[tuple[str, Tokenizer, str]],
    data: str,
    bench: Bench,
    budgets: list[int] | None,
    classic: ClassicVQCache,
    reference: Method | None,
) -> list[Method]:
    """Every row of one set: the tokenizers, then classic VQ, JPEG and WebP at each tokenizer rate, then the
    reference. ``tokenizers``: (name, model, fingerprint)."""
    first = probe(data, bench.resolution)
    methods = [m for name, tok, fp in tokenizers for m in tokenizer_methods(name, tok, fp, first, budgets)]
    rates = codec_rates(methods)
    for bits, layout, names in rates:
        tag = f"@ {names[0]}"
        m = classic_vq_method(bits, bench.resolution, layout, classic, tag)
        m.info["rate_of"] = list(names)
        methods.append(m)
    for fmt in ("JPEG", "WEBP"):
        for bits, _, names in rates:
            m = codec_method(fmt, bits, bench.resolution, f"@ {names[0]}")
            m.info["rate_of"] = list(names)
            methods.append(m)
    return methods + ([reference] if reference is not None else [])


def run_leaderboard(
    tokenizers: list[tuple[str, Tokenizer, str]],
    sets: list[str],
    bench: Bench,
    budgets: list[int] | None = None,
    reference: Method | None = None,
) -> dict[str, Any]:
    """Score every method on every set, write the leaderboard files into ``bench.out``; returns the JSON object.

    Args:
        tokenizers: (row name, tokenizer, fingerprint) of each tokenizer.
        sets: data sets as ``vtok eval --data`` takes them.
        budgets: token budgets of variable-length tokenizers (default: a quarter, a half and all).
        reference: a continuous autoencoder's row (:mod:`vtok.eval.reference_ae`), or None.
    """
    from vtok.eval.leaderboard_html import write_html
    from vtok.eval.leaderboard_plot import write_plot

    bench.metrics = parse_metrics(bench.metrics) if bench.metrics is not None else None
    classic = ClassicVQCache(images=bench.fit_images)
    plan = [(data, set_methods(tokenizers, data, bench, budgets, classic, reference)) for data in sets]
    bar = tqdm(total=sum(len(m) for _, m in plan), desc="methods", disable=not bench.progress)
    report: dict[str, Any] = {
        "setting": {"resolution": bench.resolution, "sets": sets},
        "protocol": codec_protocol(bench.fit_images),
        "sets": {},
    }
    for data, methods in plan:
        rows, floors = [], {}
        for method in methods:
            bar.set_postfix_str(method.name)
            floor = floors.get(method.curve)
            if floor is not None:  # a lower budget of a codec already at its smallest files: the same row
                floor["rate_of"] = [*floor.get("rate_of", []), *method.info.get("rate_of", [])]
            else:
                row = score(method, data, bench)
                rows.append(row)
                if row.get("at_floor"):
                    floors[method.curve] = row
            bar.update()
        report["sets"][data] = {"metrics": set_metrics(data, bench), **_set_summary(rows)}
    bar.close()
    write_outputs(report, bench.out)
    write_plot(report, bench.out / "rate_distortion.png")
    write_html(report, bench.out)
    return report


def _set_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    scored = [r for r in rows if r.get("scores")]
    skipped: dict[str, str] = {}
    protocols: dict[str, Any] = {}
    for r in scored:
        skipped.update(r.get("skipped", {}))
        protocols.update(r.get("protocols", {}))
    return {"images": scored[0]["images"] if scored else 0, "rows": rows, "skipped": skipped, "protocols": protocols}


def columns(summary: dict[str, Any]) -> list[str]:
    """The score columns of a set's table, in the report's order, skipped metrics last (marked unavailable)."""
    cols: list[str] = []
    for r in summary["rows"]:
        cols += [c for c in r.get("scores", {}) if c not in cols and not c.endswith("_std") and c != "KID"]
    cols += [_HEADERS.get(m, m) for m in summary["skipped"] if _HEADERS.get(m, m) not in cols]
    first = [c for c in _HEADERS.values() if c in cols]  # PSNR, SSIM, LPIPS, rFID, then text and the rest
    return first + [c for c in cols if c not in first]


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    """``leaderboard.md``: a table per set (rows in the order scored; a row that could not run gives its reason)."""
    s = report["setting"]
    lines = [
        "# vtok bench",
        "",
        f"Resolution {s['resolution']} px: bits per image are per {s['resolution']} x "
        f"{s['resolution']} pixels (an image of another size, or a tile, spends them per that area).",
        "",
    ]
    for data, summary in report["sets"].items():
        cols = columns(summary)
        lines += [f"## {data} ({summary['images']} images; {', '.join(summary['metrics'])})", ""]
        lines += ["| method | bits/image | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for r in summary["rows"]:
            bits = _cell(round(r["bits"])) if r.get("bits") is not None else "continuous"
            if "reason" in r and not r.get("scores"):
                cells = [f"not scored: {r['reason']}"] + [""] * (len(cols) - 1)
            else:
                sc = r["scores"]
                cells = [_cell(sc[c]) if c in sc else "unavailable" for c in cols]
            lines.append(f"| {r['method']} | {bits} | " + " | ".join(cells) + " |")
        lines.append("")
        for metric, reason in summary["skipped"].items():
            lines.append(f"- {_HEADERS.get(metric, metric)} unavailable: {reason}")
        for r in summary["rows"]:
            if r.get("scores"):
                for size, why in r.get("refused", {}).items():
                    lines.append(f"- {r['method']} left out its {size} images: {why}")
            if r.get("at_floor"):
                lines.append(
                    f"- {r['method']}: every image at quality 1, its smallest file ({r['bits']:.0f} bits on average, "
                    f"over the target); it stands for the rates of {', '.join(r.get('rate_of', []))}"
                )
        lines.append("")
    lines += ["Protocol:", ""] + [f"- **{k}**: {v}" for k, v in report["protocol"].items()]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """``leaderboard.json`` and ``leaderboard.md``, atomically."""
    with atomic_path(out / "leaderboard.json") as tmp:
        tmp.write_text(dumps_json(report, indent=2, default=float) + "\n")
    with atomic_path(out / "leaderboard.md") as tmp:
        tmp.write_text(markdown(report))
