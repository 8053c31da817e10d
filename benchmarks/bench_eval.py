"""Evaluation speed and the baselines every tokenizer is read against.

1. Throughput and peak memory of the Inception feature pass, the text metric and the
   face metric (one process, CPU threads as given by torch).
2. The whole built-in detail set at 256 scored (text + face) for one reconstruction:
   wall time and peak RSS, against the 5 minute / 2 GB goal.
3. Baselines (identity, bicubic downscale-upscale x2/x4, JPEG q90/50/10) on the built-in
   sets: rFID/KID/PSNR/SSIM on the 52 held-out crops at 256, text and face at 256.

    python benchmarks/bench_eval.py [--out benchmarks/eval.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import vtok  # noqa: F401  (torchvision compatibility before pytorch-fid imports it)
from vtok.eval.baselines import BASELINES
from vtok.eval.evaluate import evaluate

ROOT = Path(__file__).resolve().parent.parent


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def inception_throughput(batch: int = 16, reps: int = 3) -> dict:
    from vtok.eval.features import InceptionFeatures

    feats = InceptionFeatures()
    x = torch.rand(batch, 3, 256, 256) * 2 - 1
    feats(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        feats(x)
    return {"inception_img_s": batch * reps / (time.perf_counter() - t0), "batch": batch, "input": "256x256"}


def detail_set_alone() -> dict:
    """Text + face on the whole built-in detail set (256) in a fresh process: wall time and peak RSS."""
    code = (
        "import json, resource, tempfile, time; from pathlib import Path; import vtok; "
        "from vtok.eval.baselines import identity; from vtok.eval.evaluate import evaluate; "
        "t = time.perf_counter(); d = tempfile.mkdtemp(); "
        "r = evaluate(['text', 'face'], reconstruct=identity(), detail_dir=Path(d) / 's', progress=False); "
        "print(json.dumps({'seconds': time.perf_counter() - t, "
        "'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
        "'words': r.scores['text']['words_scored'] + r.scores['text']['words_unread_in_original'], "
        "'faces': r.scores['face']['faces_scored']}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "eval.json"))
    args = p.parse_args()
    report = {"machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}
    report["detail_set_alone"] = detail_set_alone()
    print(report["detail_set_alone"], flush=True)
    report["inception"] = inception_throughput()
    print(report["inception"], flush=True)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in BASELINES.items():
            t0 = time.perf_counter()
            detail = evaluate(["text", "face"], reconstruct=make(), detail_dir=Path(tmp) / "detail", progress=False)
            detail_s = time.perf_counter() - t0
            images = evaluate(["rfid", "psnr", "ssim"], reconstruct=make(), progress=False)
            row = {k: v for s in (images.scores, detail.scores) for m in s.values() for k, v in m.items()}
            row["detail_set_seconds"] = round(detail_s, 1)
            rows[name] = row
            print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        report["protocol"] = {**images.protocols, **detail.protocols}
        report["detail_set"] = detail.info
    report["baselines"] = rows
    report["peak_rss_mib_all_baselines"] = peak_mib()
    Path(args.out).write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
