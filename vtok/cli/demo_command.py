"""``vtok demo`` on the command line: its flags and its printed summary (the work is :mod:`vtok.cli.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import add_out, add_overrides, table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="train a small VQ tokenizer on the built-in photos, then reconstruct held-out crops"
    )
    add_out(p, "output folder (default: vtok-demo)", default="vtok-demo")
    add_overrides(p, "dotted overrides of the vq_demo preset (vtok presets)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from vtok.cli.demo import run_demo
    from vtok.outputs import check_out_dir, run_lock

    check_out_dir(args.out, kind="demo folder")
    with run_lock(args.out):  # one demo (and its training run) per folder at a time
        result = run_demo(args.out, args.overrides)
    rows = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
    rows["classic_vq psnr (same bits)"] = result["classic_vq"]["psnr"]
    rows["color_error (R, G, B)"] = ", ".join(f"{e:+.3f}" for e in result["color_error"])
    print(f"held-out reconstructions: {Path(args.out) / 'heldout.png'}  (originals above reconstructions)")
    print(table(rows))
