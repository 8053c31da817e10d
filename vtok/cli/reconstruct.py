"""``vtok reconstruct``: images -> tokens -> images, side by side with their PSNR."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import add_batch, add_inputs, add_out, add_size, add_speed, add_tokenizer, load_fast, table


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reconstruct", help="images -> tokens -> images, side by side with PSNR")
    add_tokenizer(p)
    add_inputs(p)
    add_out(p, "folder for side-by-side PNGs and psnr.json")
    add_size(p)
    add_batch(p)
    add_speed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from vtok.cli.args import distinct_names
    from vtok.data import load_inputs
    from vtok.eval.psnr import PSNR_PROTOCOL, psnr_per_image
    from vtok.images import save_image
    from vtok.io import atomic_path, dumps_json
    from vtok.outputs import check_out_dir
    from vtok.pipeline import decode_batched, encode_batched

    check_out_dir(args.out, args.inputs, kind="reconstructions")
    tokenizer = load_fast(args.tokenizer, args)
    names, images = load_inputs(args.inputs, args.size)
    tokens = encode_batched(tokenizer, images, args.batch_size, precision=args.precision)
    recon = decode_batched(tokenizer, tokens, args.batch_size, precision=args.precision)
    values = psnr_per_image(images, recon)
    out = Path(args.out)
    rows = {}
    for i, (name, key) in enumerate(zip(names, distinct_names(names))):
        save_image(torch.cat([images[i], recon[i]], dim=-1), out / f"{i:06d}_{Path(name).stem}.png")
        rows[key] = float(values[i])
    rows["mean"] = float(values.mean())
    with atomic_path(out / "psnr.json") as tmp:
        tmp.write_text(dumps_json({"psnr_db": rows, "protocol": PSNR_PROTOCOL}, indent=2))
    print("PSNR (dB), original | reconstruction PNGs in", out)
    print(table(rows))
