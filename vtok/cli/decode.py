"""``vtok decode``: a token file -> PNG images."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import add_batch, add_out, add_speed, add_tokenizer, load_fast


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("decode", help="token file -> PNG images")
    p.add_argument("tokens", help="token file written by `vtok encode`")
    add_tokenizer(p)
    add_out(p, "folder for the PNGs")
    add_batch(p)
    add_speed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from vtok.images import save_image
    from vtok.outputs import check_out_dir
    from vtok.pipeline import decode_batched
    from vtok.tokens import load_tokens

    check_out_dir(args.out, [args.tokens], kind="decoded images")
    tokenizer = load_fast(args.tokenizer, args)
    file = load_tokens(args.tokens, expect=tokenizer)
    images = decode_batched(tokenizer, file.tokens, args.batch_size, precision=args.precision)
    out = Path(args.out)
    names = file.names or [f"{i:06d}" for i in range(len(images))]
    for i, (name, image) in enumerate(zip(names, images)):
        save_image(image, out / f"{i:06d}_{Path(name).stem}.png")
    print(f"{len(images)} images -> {out}")
