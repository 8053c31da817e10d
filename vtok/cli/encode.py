"""``vtok encode``: images -> a token file, or a dataset -> token shards for AR training."""

from __future__ import annotations

import argparse

from vtok.cli.args import COUNT, add_batch, add_inputs, add_out, add_size, add_speed, add_tokenizer, int_list, load_fast
from vtok.errors import VtokError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("encode", help="images -> token file (safetensors)")
    add_tokenizer(p)
    add_inputs(p)
    add_out(p, "token file to write")
    add_size(p)
    p.add_argument("--labels", default=None, help="comma-separated class labels, one per image")
    p.add_argument(
        "--shards",
        type=COUNT,
        default=None,
        metavar="N",
        help="encode a dataset (builtin or a folder) into a folder of N-image shards for AR training",
    )
    p.add_argument("--no-flip", action="store_true", help="with --shards: skip the horizontally flipped copies")
    p.add_argument(
        "--num-tokens", type=COUNT, default=None, help="1D tokenizers: keep the first K tokens of every image"
    )
    p.add_argument(
        "--target",
        default=None,
        help="1D tokenizers: shortest prefix per image meeting e.g. psnr=30, ssim=0.8 or lpips=0.1",
    )
    p.add_argument("--max-tokens", type=COUNT, default=None, help="1D tokenizers: token budget per image")
    add_batch(p)
    add_speed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from vtok.outputs import check_out_dir, check_out_file, is_token_file

    if args.shards is not None:
        if len(args.inputs) != 1 or args.size is None:
            raise VtokError("--shards encodes one data source (builtin or a folder) and needs --size")
        check_out_dir(args.out, [i for i in args.inputs if i != "builtin"], kind="shard folder")
    else:
        check_out_file(args.out, args.inputs, is_token_file, kind="token file")
    tokenizer = load_fast(args.tokenizer, args)
    if args.shards is not None:
        _write_shards(tokenizer, args)
    else:
        _encode_images(tokenizer, args)


def _write_shards(tokenizer, args: argparse.Namespace) -> None:
    from vtok.shards import write_shards

    index = write_shards(
        tokenizer,
        args.inputs[0],
        args.size,
        args.out,
        args.shards,
        not args.no_flip,
        args.batch_size,
        tokenizer_dir=args.tokenizer,
    )
    print(f"{index['count']} images, {len(index['classes'])} classes -> {len(index['shards'])} shards in {args.out}")


def _encode_images(tokenizer, args: argparse.Namespace) -> None:
    import torch

    import vtok
    from vtok.data import load_inputs
    from vtok.pipeline import encode_batched
    from vtok.tokens import save_tokens

    names, images = load_inputs(args.inputs, args.size)
    labels = None
    if args.labels is not None:  # checked before the work, not after it
        labels = torch.tensor(int_list(args.labels, "--labels"))
        if len(labels) != len(names):
            raise VtokError(f"--labels gives {len(labels)} labels for {len(names)} images")
    if args.target is not None:
        from vtok.eval.adaptive import encode_adaptive

        if args.num_tokens is not None:
            raise VtokError("give --target or --num-tokens, not both")
        parts = [
            encode_adaptive(tokenizer, chunk, args.target, args.max_tokens) for chunk in images.split(args.batch_size)
        ]
        tokens = vtok.Tokens.cat([p.tokens for p in parts])
        met = torch.cat([p.met for p in parts])
        print(
            f"{args.target}: met for {int(met.sum())}/{len(met)} images with "
            f"{tokens.lengths.float().mean():.1f} tokens on average (range {int(tokens.lengths.min())}-{int(tokens.lengths.max())})"
        )
    else:
        tokens = encode_batched(
            tokenizer, images, args.batch_size, num_tokens=args.num_tokens or args.max_tokens, precision=args.precision
        )
    save_tokens(args.out, tokens, tokenizer.fingerprint(), labels=labels, names=names)
    print(f"{len(names)} images -> {tokens.num_positions} positions x {tokens.ids.shape[2]} codes each -> {args.out}")
