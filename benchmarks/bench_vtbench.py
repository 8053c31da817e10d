"""VTBench's tasks on the built-in sets: the demo tokenizers and JPEG side by side, at 64 px.

Every method reconstructs the same images through ``vtok.eval.evaluate`` (the
library call ``vtok eval`` makes): text pages (documents, posters, multilingual)
as 4 x 4 tiles of 64 px (a 64 px model cannot hold a legible page in one 64 px
image, so it reconstructs the 256 px page tile by tile, and JPEG compresses the
same tiles); detail patterns as 64 px crops; high-resolution crops at 256 px and
the non-square crops at their own sizes, in one piece where the tokenizer takes
them, refused with the reason where it does not. Whole-image OCR is rapidocr's.

Results accumulate in the JSON file, one method at a time, so the run can be
split into short jobs; ``--table`` prints the markdown tables from it.

    python benchmarks/bench_vtbench.py [--methods jpeg_q10 vq_demo ...] [--sets vtbench-documents ...]
        [--out benchmarks/vtbench.json] [--table]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path("/work/runs")
DEMOS = ("vq_demo", "rq_demo", "oned_demo", "dual_dualtoken_demo", "vq_lfq_demo", "vq_bsq_demo")
CODECS = {"jpeg_q10": 10, "jpeg_q50": 50, "jpeg_q90": 90}
TASKS = (
    ("vtbench-documents", ("cer", "wer", "psnr")),
    ("vtbench-posters", ("cer", "psnr")),
    ("vtbench-multilingual", ("cer",)),
    ("vtbench-detail", ("psnr", "ssim", "lpips")),
    ("vtbench-highres", ("psnr", "ssim")),
    ("vtbench-varying", ("psnr", "ssim")),
)
RESOLUTION = 64


def method_kwargs(name: str, runs: Path) -> dict:
    """evaluate()'s keyword for ``name``: a demo's tokenizer or a JPEG round trip."""
    if name in CODECS:
        from vtok.eval.baselines import jpeg

        return {"reconstruct": jpeg(CODECS[name])}
    import vtok

    return {"tokenizer": vtok.load(runs / name / "final").eval()}


def run_method(name: str, runs: Path, sets: list[str] | None = None, out: dict | None = None) -> dict:
    """Score ``name`` on every task (or only ``sets``), updating ``out`` (the method's earlier rows)."""
    from vtok.eval.evaluate import evaluate

    kwargs = method_kwargs(name, runs)
    out = dict(out or {})
    for data, metrics in TASKS:
        if sets and data not in sets:
            continue
        started = time.perf_counter()
        result = evaluate(list(metrics), data=data, resolution=RESOLUTION, progress=False, **kwargs)
        out[data] = {
            "scores": result.scores,
            "skipped": result.skipped,
            "refused": result.info.get("refused", {}),
            "images": result.info.get("images"),
            "fit": result.info.get("fit"),
            "seconds": round(time.perf_counter() - started, 1),
        }
    return out


def _cell(row: dict, metric: str, column: str) -> str:
    value = row.get("scores", {}).get(metric, {}).get(column)
    if value is None:
        return "refused" if row.get("refused") and not row.get("scores") else "-"
    return "n/a" if math.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.2f}"


def table(results: dict) -> str:
    methods = [m for m in (*CODECS, *DEMOS) if m in results["methods"]]
    cols = (
        ("documents CER", "vtbench-documents", "cer", "CER"),
        ("small print CER", "vtbench-documents", "cer", "CER_print_small"),
        ("medium print CER", "vtbench-documents", "cer", "CER_print_medium"),
        ("large print CER", "vtbench-documents", "cer", "CER_print_large"),
        ("documents CER vs truth", "vtbench-documents", "cer", "CER_truth"),
        ("documents WER", "vtbench-documents", "wer", "WER"),
        ("posters CER", "vtbench-posters", "cer", "CER"),
        ("Latin CER", "vtbench-multilingual", "cer", "CER_latin"),
        ("documents PSNR", "vtbench-documents", "psnr", "PSNR"),
        ("detail PSNR", "vtbench-detail", "psnr", "PSNR"),
        ("detail SSIM", "vtbench-detail", "ssim", "SSIM"),
        ("detail LPIPS", "vtbench-detail", "lpips", "LPIPS"),
        ("high-res PSNR", "vtbench-highres", "psnr", "PSNR"),
        ("varying PSNR", "vtbench-varying", "psnr", "PSNR"),
    )
    lines = ["| method | " + " | ".join(c[0] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in methods:
        rows = results["methods"][m]
        lines.append(f"| {m} | " + " | ".join(_cell(rows[d], metric, col) for _, d, metric, col in cols) + " |")
    refusals = [
        f"- {m} on {d}: " + "; ".join(f"{s}: {r}" for s, r in row["refused"].items())
        for m in methods
        for d, row in results["methods"][m].items()
        if row.get("refused")
    ]
    return "\n".join(lines + ([""] + refusals if refusals else [])) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--methods", nargs="+", default=None, help="default: JPEG at 10/50/90 and every finished demo")
    p.add_argument("--runs", default=str(RUNS), help="folder holding <demo>/final")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "vtbench.json"))
    p.add_argument("--table", action="store_true", help="print the tables from --out and stop")
    p.add_argument("--sets", nargs="+", default=None, help="re-score only these sets, keeping the others' rows")
    args = p.parse_args()
    out, runs = Path(args.out), Path(args.runs)
    results = json.loads(out.read_text()) if out.is_file() else {"methods": {}}
    if args.table:
        print(table(results))
        return
    methods = args.methods or [*CODECS, *(d for d in DEMOS if (runs / d / "final").is_dir())]
    for name in methods:
        started = time.perf_counter()
        results["methods"][name] = run_method(name, runs, args.sets, results["methods"].get(name))
        results["machine"] = f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
        out.write_text(json.dumps(results, indent=1, default=float) + "\n")
        print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
