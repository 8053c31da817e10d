"""Randomised bad inputs against every command for a fixed time: any traceback, odd exit or changed input is a bug.

Families: damaged images, token files, weights, configs and source checkpoints; random preset values and
flags; token-file metadata against its schema; extreme integers; 1-pixel strips; damaged checkpoints inside
run folders (resumed); output paths inside other vtok folders (a model, a run, shards, the data).

    python benchmarks/fuzz.py [--seconds 300] [--seed 0] [--out benchmarks/fuzz.json]   (or: make fuzz)

Each case copies nothing: it damages a fresh file in a scratch folder (truncated or
bit-flipped images, token files, model weights and configs) or draws a random value
for a preset key or a numeric flag, runs ``vtok`` in-process and checks that it
exits 0 or 2, prints no traceback, and leaves every file it was given byte-identical.
A 8000 x 8000 photograph is encoded once at ``--size 256`` first, and the peak
resident memory of the whole run is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import vtok
from vtok.cli import main
from vtok.tokens import save_tokens

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.test_convert import SOURCES as CHECKPOINTS  # noqa: E402  synthetic checkpoints in the released layouts

TINY = ROOT / "configs" / "tokenizer" / "vq_tiny.yaml"
VALUES = ["-1", "0", "nan", "inf", "-inf", "1e30", "abc", "[]", "{}", "true", "null", "[1, -2]", "0.5", "''", "&a [*a]"]
TRAIN_KEYS = [
    "train.steps", "train.batch_size", "train.lr", "train.betas", "train.grad_accum", "train.ema_decay",
    "train.log_every", "train.warmup_steps", "train.min_lr_ratio", "data.image_size", "data.crop_scale",
    "data.color_jitter", "data.source", "model.quantizer.codebook_size", "model.quantizer.dim",
    "model.quantizer.decay", "model.encoder.ch", "model.encoder.ch_mult", "model.decoder.z_channels",
    "loss.l2_weight", "loss.disc_start",
]  # fmt: skip
RUN = ["train.steps=2", "train.batch_size=2", "data.image_size=32", "train.save_every=1", "train.log_every=1"]
EXTREME = ["2147483648", "9223372036854775808", str(2**70), "99999999999999999999", "-9223372036854775809",
           "-1", "1e3", "0x10", "1_0", "१२"]  # fmt: skip
INT_FLAGS = {
    "generate": ["--classes", "--seed", "--num", "--per-class", "--top-k", "--batch-size"],
    "encode": ["--labels", "--size", "--batch-size", "--shards"],
}
FLAGS = {
    "encode": ["--size", "--batch-size", "--num-tokens", "--max-tokens"],
    "decode": ["--batch-size"],
    "generate": ["--top-k", "--top-p", "--cfg", "--temperature", "--per-class", "--num", "--seed"],
}


def build_world(folder: Path) -> dict[str, Path]:
    torch.manual_seed(0)
    tok = vtok.build(TINY).eval()
    tok.save_pretrained(folder / "tok")
    rng = np.random.default_rng(0)
    image = folder / "photo.png"
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(image)
    Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(folder / "photo.jpg", quality=90)
    with torch.no_grad():
        tokens = tok.encode(torch.rand(3, 3, 32, 32) * 2 - 1)
    save_tokens(folder / "tokens.safetensors", tokens, tok.fingerprint(), names=["a", "b", "c"])
    world = {"tok": folder / "tok", "png": image, "jpg": folder / "photo.jpg", "tokens": folder / "tokens.safetensors"}
    for source, make in CHECKPOINTS.items():
        world[source] = folder / f"{source}.pt"
        torch.save(make(), world[source])
    # A run with two checkpoints and a shard folder: inputs of the "run" and "nested" families.
    quiet = contextlib.redirect_stderr(io.StringIO())
    with quiet, contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", str(TINY), *RUN, "--out", str(folder / "run")]) == 0
        (folder / "photos").mkdir()
        shutil.copy(image, folder / "photos" / "a.png")
        argv = ["encode", "--tokenizer", str(folder / "tok"), str(folder / "photos"), "--shards", "4", "--size", "32"]
        assert main([*argv, "--out", str(folder / "shards")]) == 0
    world.update(run=folder / "run", shards=folder / "shards", photos=folder / "photos")
    return world


def damage(data: bytes, rng: random.Random) -> bytes:
    """Truncate, flip bits, or overwrite a stretch: what a bad disk or a cut download does."""
    kind = rng.choice(["truncate", "flip", "zero", "empty"])
    if kind == "empty" or not data:
        return b""
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    buf = bytearray(data)
    for _ in range(rng.randint(1, 16)):
        i = rng.randrange(len(buf))
        buf[i] = 0 if kind == "zero" else buf[i] ^ (1 << rng.randrange(8))
    return bytes(buf)


def json_value(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value: what a hand-edited or hostile token file's metadata may hold."""
    kind = rng.choice(
        ["int", "big", "neg", "float", "str", "nul", "list", "dict", "null", "bool"] if depth < 3 else ["int", "str"]
    )
    return {
        "int": lambda: rng.randint(0, 100), "big": lambda: 2 ** rng.randint(31, 80), "neg": lambda: -rng.randint(1, 10),
        "float": lambda: rng.choice([0.5, float("nan"), 1e300]), "str": lambda: rng.choice(["5", "a/b", "\n", "..", ""]),
        "nul": lambda: "a\0b", "null": lambda: None, "bool": lambda: True,
        "list": lambda: [json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
        "dict": lambda: {rng.choice(["grid", "codebook_sizes", "scales", "x"]): json_value(rng, depth + 1)},
    }[kind]()  # fmt: skip


def metadata_case(world: dict[str, Path], scratch: Path, rng: random.Random) -> tuple[list[str], list[Path]]:
    """A token file whose metadata breaks the schema in one field (names, layout.grid, ...)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(world["tokens"]), "pt") as f:
        meta = dict(f.metadata())
    layout = json.loads(meta["layout"])
    field = rng.choice(["names", "grid", "codebook_sizes", "scales", "layout", "format", "hash"])
    value = json_value(rng)
    if field in ("grid", "codebook_sizes", "scales"):
        layout[field] = value
        meta["layout"] = json.dumps(layout)
    elif field == "layout":
        meta["layout"] = json.dumps(value)
    elif field == "names":
        meta["names"] = json.dumps(value) if rng.random() < 0.8 else "{not json"
    else:
        meta["format" if field == "format" else "tokenizer_hash"] = str(value)
    bad = scratch / "meta.safetensors"
    save_file(load_file(str(world["tokens"])), str(bad), metadata=meta)
    return ["decode", str(bad), "--tokenizer", str(world["tok"]), "--out", str(scratch / "out")], [bad]


def strip_case(world: dict[str, Path], scratch: Path, rng: random.Random) -> tuple[list[str], list[Path]]:
    """A 1-pixel strip up to 300,000 long (tiny as a PNG, gigabytes if resized whole to cover --size)."""
    n = rng.choice([2, 9, 1000, 100_000, 300_000])
    size = (n, 1) if rng.random() < 0.5 else (1, n)
    bad = scratch / "strip.png"
    Image.new("RGB", size, (rng.randrange(256), 0, 0)).save(bad)
    cmd = rng.choice(["encode", "reconstruct"])
    out = str(scratch / "out" / "t.safetensors") if cmd == "encode" else str(scratch / "out")
    return [cmd, "--tokenizer", str(world["tok"]), str(bad), "--size", str(rng.choice([8, 32, 64])), "--out", out], [
        bad
    ]


def run_case(world: dict[str, Path], scratch: Path, rng: random.Random) -> tuple[list[str], list[Path]]:
    """A copy of a run with one checkpoint file damaged (or a pickle of another class, or the pointer edited)."""
    import pickle

    run = scratch / "run"
    shutil.copytree(world["run"], run)
    step = rng.choice(sorted((run / "checkpoints").glob("step_*")))
    files = [*sorted(step.iterdir()), run / "checkpoints" / "latest"]
    bad = rng.choice(files)
    kind = rng.random()
    if kind < 0.2 and bad.suffix == ".pt":
        bad.write_bytes(pickle.dumps(rng.choice([Path("x"), os.getcwd, {"torch": 1}])))
    elif kind < 0.3 and bad.name == "latest":
        bad.write_text(rng.choice(["../../etc", "step_99999999", "", "step_00000001\n\n"]))
    else:
        bad.write_bytes(damage(bad.read_bytes(), rng))
    steps = rng.choice(["train.steps=2", "train.steps=3"])
    # Resuming to step 3, or from a pointer edited to name step 1, rewrites checkpoints and the pointer by design.
    kept = steps.endswith("2") and bad.name != "latest"
    return ["train", str(TINY), *RUN, steps, "--out", str(run)], [bad] if kept else []


def nested_case(world: dict[str, Path], scratch: Path, rng: random.Random) -> tuple[list[str], list[Path]]:
    """An output path that is, or lies inside, a folder vtok made for something else (a model, a run, shards)."""
    name = rng.choice(["tok", "run", "shards", "photos"])
    folder = world[name]
    out = folder if rng.random() < 0.5 else folder / rng.choice(["x", "final", "checkpoints", "a/b"])
    tok, png = str(world["tok"]), str(world["png"])
    if name == "photos":  # the data: an output inside the input it reads
        return rng.choice([
            ["reconstruct", "--tokenizer", tok, str(folder), "--size", "32", "--out", str(out)],
            ["encode", "--tokenizer", tok, str(folder), "--size", "32", "--out", str(out / "t.safetensors")],
            ["encode", "--tokenizer", tok, str(folder), "--size", "32", "--out", str(out / "t.png")],
            ["train", str(TINY), *RUN, f"data.source={folder}", "--out", str(out / "run")],
        ]), [folder]  # fmt: skip
    argv = rng.choice([
        ["decode", str(world["tokens"]), "--tokenizer", tok, "--out", str(out)],
        ["reconstruct", "--tokenizer", tok, png, "--size", "32", "--out", str(out)],
        ["encode", "--tokenizer", tok, png, "--size", "32", "--out", str(out / "t.safetensors")],
        ["encode", "--tokenizer", tok, png, "--size", "32", "--out", str(out / "t.png")],
        ["convert", "--from", "llamagen-vq", str(world["llamagen-vq"]), "--out", str(out)],
        ["train", str(TINY), *RUN, "--out", str(out if name != "run" else out / "x")],  # (resuming a run is fine)
        ["demo", "--out", str(out)],
        ["generate", "--model", tok, "--tokenizer", tok, "--out", str(out / "g.png")],
    ])  # fmt: skip
    return argv, [folder]


def case(world: dict[str, Path], scratch: Path, rng: random.Random) -> tuple[str, list[str], list[Path]]:
    """One random case: its family, argv and the files it was given (which must not change)."""
    family = rng.choice(
        ["image", "tokens", "weights", "config", "checkpoint", "override", "flag",
         "metadata", "integer", "strip", "run", "nested"]
    )  # fmt: skip
    out = scratch / "out"
    if family in ("metadata", "strip", "run", "nested"):
        make = {"metadata": metadata_case, "strip": strip_case, "run": run_case, "nested": nested_case}[family]
        return family, *make(world, scratch, rng)
    if family == "integer":
        cmd = rng.choice(list(INT_FLAGS))
        flag, value = rng.choice(INT_FLAGS[cmd]), rng.choice(EXTREME)
        if cmd == "encode":
            argv = ["encode", "--tokenizer", str(world["tok"]), str(world["png"]), "--out", str(out / "t.safetensors")]
        else:
            argv = [
                "generate",
                "--model",
                str(world["tok"]),
                "--tokenizer",
                str(world["tok"]),
                "--out",
                str(out / "g.png"),
            ]
        return family, [*argv, flag, value], []
    if family == "image":
        src = world[rng.choice(["png", "jpg"])]
        bad = scratch / f"bad{src.suffix}"
        bad.write_bytes(damage(src.read_bytes(), rng))
        cmd = rng.choice(["encode", "reconstruct"])
        target = str(out / "t.safetensors") if cmd == "encode" else str(out)
        return family, [cmd, "--tokenizer", str(world["tok"]), str(bad), "--size", "32", "--out", target], [bad]
    if family == "tokens":
        bad = scratch / "bad.safetensors"
        bad.write_bytes(damage(world["tokens"].read_bytes(), rng))
        return family, ["decode", str(bad), "--tokenizer", str(world["tok"]), "--out", str(out)], [bad]
    if family in ("weights", "config"):
        tok = scratch / "tok"
        shutil.copytree(world["tok"], tok)
        file = tok / ("model.safetensors" if family == "weights" else "config.json")
        file.write_bytes(damage(file.read_bytes(), rng))
        argv = ["encode", "--tokenizer", str(tok), str(world["png"]), "--size", "32", "--out", str(out / "t.st")]
        return family, argv, [file]
    if family == "checkpoint":  # a damaged source file, or an intact one of another family
        given = rng.choice(list(CHECKPOINTS))
        bad = scratch / f"src{rng.choice(['.pt', '.bin', '.ckpt', '.safetensors'])}"
        intact = rng.random() < 0.3
        bad.write_bytes(world[given].read_bytes() if intact else damage(world[given].read_bytes(), rng))
        source = rng.choice(list(CHECKPOINTS)) if intact else given
        return family, ["convert", "--from", source, str(bad), "--out", str(out)], [bad]
    if family == "override":
        overrides = [f"{rng.choice(TRAIN_KEYS)}={rng.choice(VALUES)}" for _ in range(rng.randint(1, 2))]
        base = ["train.steps=1", "train.batch_size=2", "data.image_size=32", "train.save_every=1"]
        return family, ["train", str(TINY), *base, *overrides, "--out", str(out)], []
    cmd = rng.choice(list(FLAGS))
    flag, value = rng.choice(FLAGS[cmd]), rng.choice(VALUES + ["-5", "2", "1"])
    if cmd == "encode":
        argv = ["encode", "--tokenizer", str(world["tok"]), str(world["png"]), "--out", str(out / "t.safetensors")]
    elif cmd == "decode":
        argv = ["decode", str(world["tokens"]), "--tokenizer", str(world["tok"]), "--out", str(out)]
    else:  # no AR model here: a bad flag must be refused before the model is read
        argv = ["generate", "--model", str(world["tok"]), "--tokenizer", str(world["tok"]), "--out", str(out / "g.png")]
    return family, [*argv, flag, value], []


def digest(paths: list[Path]) -> list[str | None]:
    """A hash per file; a folder's covers every file in it and their names (a file added is a change)."""

    def one(p: Path) -> str | None:
        if p.is_dir():
            h = hashlib.sha256()
            for f in sorted(q for q in p.rglob("*") if q.is_file() and q.name != ".vtok-lock"):
                h.update(str(f.relative_to(p)).encode() + hashlib.sha256(f.read_bytes()).digest())
            return h.hexdigest()
        return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None

    return [one(p) for p in paths]


def run(argv: list[str]) -> tuple[int | str, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
        except BaseException as escaped:  # noqa: BLE001 - what the fuzzer is looking for
            code = f"traceback: {escaped.__class__.__name__}: {str(escaped)[:200]}"
    return code, err.getvalue()


def largest_input(folder: Path, tok: Path) -> dict[str, float]:
    """Encode an 8000 x 8000 photograph at --size 256; peak resident memory after it."""
    rng = np.random.default_rng(1)
    big = folder / "big.jpg"
    small = rng.integers(0, 255, (250, 250, 3), dtype=np.uint8)
    Image.fromarray(small).resize((8000, 8000), Image.BILINEAR).save(big, quality=85)
    code, err = run(["encode", "--tokenizer", str(tok), str(big), "--size", "256", "--out", str(folder / "big.st")])
    return {
        "pixels": 8000 * 8000,
        "exit": code,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def fuzz(seconds: float, seed: int) -> dict:
    rng = random.Random(seed)
    problems: list[dict] = []
    families: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        world = build_world(root / "world")
        big = largest_input(root, world["tok"])
        originals = digest(list(world.values())[1:])
        started, tried = time.perf_counter(), 0
        while time.perf_counter() - started < seconds:
            scratch = root / f"case{tried}"
            scratch.mkdir()
            family, argv, given = case(world, scratch, rng)
            before = digest(given)
            code, err = run(argv)
            tried += 1
            families[family] += 1
            issue = None
            if isinstance(code, str) or "Traceback" in err:
                issue = code if isinstance(code, str) else "traceback printed"
            elif code not in (0, 2):
                issue = f"exit {code}"
            elif digest(given) != before or digest(list(world.values())[1:]) != originals:
                issue = "an input file changed"
            if issue:
                problems.append({"family": family, "argv": [a.replace(str(root), "") for a in argv], "problem": issue})
            shutil.rmtree(scratch, ignore_errors=True)
    return {
        "seconds": seconds,
        "seed": seed,
        "cases": tried,
        "by_family": dict(families),
        "tracebacks": sum(p["problem"].startswith("traceback") for p in problems),
        "odd_exits": sum(p["problem"].startswith("exit") for p in problems),
        "inputs_changed": sum(p["problem"] == "an input file changed" for p in problems),
        "largest_input": big,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "problems": problems[:50],
    }


def main_() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "fuzz.json"))
    args = p.parse_args()
    report = fuzz(args.seconds, args.seed)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print("| cases | tracebacks | odd exits | inputs changed | peak memory | largest input |")
    print("|---|---|---|---|---|---|")
    big = report["largest_input"]
    print(
        f"| {report['cases']} | {report['tracebacks']} | {report['odd_exits']} | {report['inputs_changed']} | "
        f"{report['peak_rss_mb']:.0f} MB | {big['pixels'] / 1e6:.0f} MP at --size 256 (exit {big['exit']}) |"
    )
    for problem in report["problems"][:10]:
        print(problem)


if __name__ == "__main__":
    main_()
