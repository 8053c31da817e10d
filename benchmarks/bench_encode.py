"""Images/s and peak resident memory of ``vtok encode --shards`` over JPEGs of natural photographs.

The JPEGs (about 640 px, 10 class folders) are cut once from the photographs scikit-image,
scikit-learn and matplotlib ship (random crops, flips and rescales, as vtok.builtin finds
them) into a cache folder. Each case runs in a fresh process (or two, through
``accelerate launch``) that encodes the folder with :func:`vtok.shards.write_shards`;
the parent samples the resident memory of the whole process tree (ranks and DataLoader
workers) every 50 ms. ``seconds`` is the encode alone (model loaded, up to the index
written on rank 0), ``wall`` the process with its start-up.

    python benchmarks/bench_encode.py --model demo --size 64 --count 400 --workers 0,1,2 --ranks 1,2
    python benchmarks/bench_encode.py --model demo --size 256 --count 400,4000 --workers 2 [--no-trim]
    python benchmarks/bench_encode.py --model demo --size 256 --count 4000 --workers 2 --trim on,off --repeats 2

Tokenizers are random-initialised (a model's speed does not depend on its training).
Writes (appends) rows to ``--json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VTOK_BENCH_CACHE", Path.home() / ".cache" / "vtok" / "bench_encode"))
MODELS = {"demo": "vq_demo", "tiny": "vq_tiny", "vq_f16": "vq_f16"}


def make_jpegs(count: int, folder: Path, side: int = 640, seed: int = 0) -> Path:
    """``count`` JPEGs with a long side near ``side``, cut from the packaged photographs (written once)."""
    import numpy as np
    from PIL import Image

    from vtok.builtin import PHOTOS, photo

    done = folder / f"done_{count}"
    if done.is_file():
        return folder
    rng = np.random.default_rng(seed)
    photos = [photo(name) for name in PHOTOS]
    for i in range(count):
        image = photos[i % len(photos)]
        w, h = image.size
        cw, ch = (int(x * rng.uniform(0.6, 1.0)) for x in (w, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = image.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        scale = rng.uniform(0.85, 1.15) * side / max(crop.size)
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC)
        path = folder / f"class_{i % 10:02d}" / f"{i:06d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        crop.save(path, quality=90)
    done.write_text("")
    return folder


def tokenizer_dir(model: str) -> Path:
    """A random-initialised tokenizer of the preset, saved once."""
    import torch

    import vtok

    path = CACHE / "tokenizers" / model
    if not (path / "config.json").is_file():
        torch.manual_seed(0)
        vtok.build(ROOT / "configs" / "tokenizer" / f"{MODELS[model]}.yaml").eval().save_pretrained(path)
    return path


def child(args: argparse.Namespace) -> None:
    """One encode, timed from after the model is loaded; rank 0 prints a JSON line."""
    import vtok
    from vtok.ranks import current_ranks
    from vtok.shards import write_shards

    ranks = current_ranks()
    if args.no_trim:  # the heap left as glibc keeps it (forked DataLoader workers inherit the patch)
        import vtok.streaming

        vtok.streaming.release_free_heap = lambda *a, **k: False
    tok = vtok.load(args.tokenizer).eval().to(ranks.device(args.device))
    ranks.barrier()
    started = time.perf_counter()
    index = write_shards(
        tok, args.data, args.size, args.out, args.shard_size, True, 16, False, args.tokenizer, args.workers_n, "fp32",
        ranks,
    )  # fmt: skip
    if ranks.main:
        print(json.dumps({"seconds": time.perf_counter() - started, "count": index["count"]}), flush=True)


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` alone (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (FileNotFoundError, ProcessLookupError):
        return 0


def tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and all its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def run_case(
    model: str,
    size: int,
    workers: int,
    ranks: int,
    data: Path,
    port: int,
    device: str = "cpu",
    shard_size: int = 1000,
    no_trim: bool = False,
) -> dict:
    tok = tokenizer_dir(model)
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, __file__, "--child", "--tokenizer", str(tok), "--data", str(data), "--size", str(size)]
        cmd += ["--out", out, "--workers-n", str(workers), "--shard-size", str(shard_size), "--device", device]
        cmd += ["--no-trim"] if no_trim else []
        if ranks > 1:
            launch = [sys.executable, "-m", "vtok.launch", "--multi_gpu", "--num_processes", str(ranks)]
            launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
            cmd = [*launch, "--main_process_port", str(port), *cmd[1:]]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        peak = peak_main = 0
        while proc.poll() is None:
            peak = max(peak, tree_rss(proc.pid))
            peak_main = max(peak_main, rss(proc.pid))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"case failed: {' '.join(cmd)}\n{stderr[-2000:]}")
        line = json.loads([s for s in stdout.splitlines() if s.startswith("{")][-1])
    return {
        "model": model, "device": device, "size": size, "images": line["count"], "workers": workers, "ranks": ranks,
        "shard_size": shard_size, "seconds": round(line["seconds"], 2), "images_per_s": round(line["count"] / line["seconds"], 1),
        "wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20),
        "peak_main_rss_mb": round(peak_main / 2**20), "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_"), "heap_trim": not no_trim, "load": os.getloadavg()[0],
    }  # fmt: skip


def trim_summary(rows: list[dict]) -> str:
    """Heap trimming on against off for each case: the fastest run and the lowest peak of each, and their ratios."""
    lines = [
        "| images | ranks | workers | img/s on | img/s off | on/off | peak MB on | peak MB off | on/off |",
        "|---" * 9 + "|",
    ]
    cases = sorted({(r["images"], r["ranks"], r["workers"]) for r in rows})
    for case in cases:
        runs = {t: [r for r in rows if (r["images"], r["ranks"], r["workers"]) == case and r["heap_trim"] == t]
                for t in (True, False)}  # fmt: skip
        if not runs[True] or not runs[False]:
            continue
        speed = {t: max(r["images_per_s"] for r in runs[t]) for t in runs}
        peak = {t: min(r["peak_rss_mb"] for r in runs[t]) for t in runs}
        lines.append(
            f"| {case[0]} | {case[1]} | {case[2]} | {speed[True]} | {speed[False]} | {speed[True] / speed[False]:.2f}x "
            f"| {peak[True]} | {peak[False]} | {peak[True] / peak[False]:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tokenizer", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--workers-n", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--shard-size", type=int, default=1000, help="images per shard (ranks split whole shards)")
    p.add_argument("--model", default="demo", choices=sorted(MODELS))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--count", default="400", help="JPEGs to encode, e.g. 400,4000")
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--ranks", default="1")
    p.add_argument("--no-trim", action="store_true", help="leave glibc's freed heap resident (vtok.heap off)")
    p.add_argument(
        "--trim", default="on", help="heap trimming per case: on, off, or on,off to run both side by side (alternating)"
    )
    p.add_argument("--repeats", type=int, default=1, help="runs of each case (alternating with --trim on,off)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (each rank takes its own GPU)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "encode.json"))
    args = p.parse_args()
    if args.child:
        child(args)
        return
    trims = ["off"] if args.no_trim else args.trim.split(",")
    if not set(trims) <= {"on", "off"}:
        raise SystemExit(f"--trim takes on, off or on,off; got {args.trim!r}")
    rows = []
    for count in (int(c) for c in args.count.split(",")):
        data = make_jpegs(count, CACHE / f"jpegs_{count}")
        for ranks in (int(r) for r in args.ranks.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                for _ in range(args.repeats):
                    for trim in trims:  # alternating, so a slow spell of the machine hits both alike
                        port = 29600 + len(rows)
                        row = run_case(
                            args.model, args.size, workers, ranks, data, port, args.device, args.shard_size,
                            trim == "off",
                        )  # fmt: skip
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    if len(trims) > 1:
        print(trim_summary(rows))
    path = Path(args.json)
    old = json.loads(path.read_text()) if path.is_file() else []
    path.write_text(json.dumps(old + rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
