"""vtok's eager GPT-B sampling at an earlier commit beside today's: same weights, same seeds, one process.

The GPT, its layers and its sampler (``ar_models/{gpt,layers,sample}.py``) are read from git at ``--commit``
(default: the commit before the static decode step) into a temporary package, and both versions sample GPT-B
(random weights, fp32, top-k 1000) at batch 1, batch 8 and batch 8 with CFG 2, alternating calls (old, new, old,
new, ...). A row gives each one's fastest call, all calls, and whether both drew the same tokens.

    python benchmarks/bench_eager_history.py [--commit f2cc720^] [--calls 2] [--threads 2] [--only "B=8, CFG 2"]
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, generate

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [("B=1", 1, 1.0), ("B=8", 8, 1.0), ("B=8, CFG 2", 8, 2.0)]


def old_package(commit: str, where: Path):
    """The three files at ``commit`` as package ``vtok_ar_old`` (their imports of each other redirected to it)."""
    package = where / "vtok_ar_old"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("gpt", "layers", "sample"):
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:ar_models/{name}.py"],
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        text = text.replace("vtok.ar_models.", "vtok_ar_old.").replace('@register("model", "gpt")\n', "")
        (package / f"{name}.py").write_text(text)
    sys.path.insert(0, str(where))
    return importlib.import_module("vtok_ar_old.gpt"), importlib.import_module("vtok_ar_old.sample")


def seconds(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--commit", default="f2cc720^", help="the earlier commit (default: before the static step)")
    p.add_argument("--calls", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", help="one setting, e.g. 'B=8, CFG 2'")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        old_gpt, old_sample = old_package(args.commit, Path(tmp))
        torch.manual_seed(0)
        new = GPT(GPT.Config(zero_prefix_rotary=True)).eval()
        old = old_gpt.GPT(old_gpt.GPT.Config(zero_prefix_rotary=True)).eval()
        old.load_state_dict(new.state_dict())
        for name, batch, cfg in SETTINGS:
            if args.only and name != args.only:
                continue
            labels = torch.arange(batch)
            times: dict[str, list[float]] = {"old": [], "new": []}
            old_sampling = old_sample.SamplingConfig(seed=0, top_k=1000, cfg_scale=cfg)
            sampling = SamplingConfig(seed=0, top_k=1000, cfg_scale=cfg)
            for _ in range(args.calls):
                t, a = seconds(lambda y=labels, s=old_sampling: old_sample.generate(old, y, sampling=s))
                times["old"].append(round(t, 2))
                t, b = seconds(lambda y=labels, s=sampling: generate(new, y, sampling=s))
                times["new"].append(round(t, 2))
            row = {"setting": name, "old_s": min(times["old"]), "new_s": min(times["new"]), "calls": times}
            row["old_over_new"] = round(row["old_s"] / row["new_s"], 3)
            row["same_tokens"] = bool(torch.equal(a.ids, b.ids))
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
