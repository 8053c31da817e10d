"""``vtok encode``: images -> a token file, or a dataset -> token shards for AR training."""

from __future__ import annotations

import argparse

from vtok.cli.args import (
    COUNT,
    add_batch,
    add_inputs,
    add_out,
    add_size,
    add_speed,
    add_tokenizer,
    add_workers,
    int_list,
    load_fast,
)
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
        help="1D tokenizers: shortest prefix per image meeting e.g. psnr=30, ssim=0.8, lpips=0.1 or l1=0.05",
    )
    p.add_argument("--max-tokens", type=COUNT, default=None, help="1D tokenizers: token budget per image")
    p.add_argument(
        "--single-pass",
        action="store_true",
        help="with --target: each image's length from the tokenizer's halting head in one pass, not the search",
    )
    add_batch(p)
    add_workers(p)
    add_speed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from vtok.outputs import check_out_dir, check_out_file, is_token_file
    from vtok.ranks import current_ranks

    ranks = current_ranks()
    if args.shards is not None:
        if len(args.inputs) != 1 or args.size is None:
            raise VtokError("--shards encodes one data source (builtin or a folder) and needs --size")
        check_out_dir(args.out, [i for i in args.inputs if i != "builtin"], kind="shard folder")
    else:
        if ranks.world > 1:
            raise VtokError("a token file is written by one process; encode with --shards under accelerate launch")
        check_out_file(args.out, args.inputs, is_token_file, kind="token file")
    args.device = ranks.device(args.device)
    tokenizer = load_fast(args.tokenizer, args)
    if args.shards is not None:
        _write_shards(tokenizer, args, ranks)
    else:
        _encode_images(tokenizer, args)


def _write_shards(tokenizer, args: argparse.Namespace, ranks) -> None:
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
        workers=args.workers,
        precision=args.precision,
        ranks=ranks,
    )
    if ranks.main:
        print(
            f"{index['count']} images, {len(index['classes'])} classes -> {len(index['shards'])} shards in {args.out}"
        )


def _encode_images(tokenizer, args: argparse.Namespace) -> None:
    import torch

    import vtok
    from vtok.fast import autocast
    from vtok.pipeline import device_of
    from vtok.streaming import command_inputs, image_batches, to_device
    from vtok.tokens import save_tokens

    files, strict = command_inputs(args.inputs)
    labels = None
    if args.labels is not None:  # checked before the work, not after it
        labels = torch.tensor(int_list(args.labels, "--labels"))
        if len(labels) > len(files):
            raise VtokError(f"--labels gives {len(labels)} labels for {len(files)} images")
    if args.target is not None and args.num_tokens is not None:
        raise VtokError("give --target or --num-tokens, not both")
    if args.single_pass:
        from vtok.eval.adaptive import parse_target, require_halting

        if args.target is None:
            raise VtokError("--single-pass chooses lengths for a --target (e.g. --target psnr=30); give one")
        require_halting(tokenizer, parse_target(args.target)[0])  # before any image is read
    device = device_of(tokenizer)
    # No bar for --target: its own checks (a 1D tokenizer) come with the first batch, on a clean line.
    batches = image_batches(
        files, strict, args.size, args.batch_size, args.workers, device, progress=args.target is None, desc="encode"
    )
    kept: list[int] = []  # the indices of the files encoded, in order: only ids and these accumulate
    if args.target is not None:
        from vtok.eval.adaptive import encode_adaptive, encode_single_pass

        choose = encode_single_pass if args.single_pass else encode_adaptive
        parts = []
        for batch in batches:
            parts.append(choose(tokenizer, batch.images, args.target, args.max_tokens))
            kept += batch.indices
        tokens = vtok.Tokens.cat([p.tokens for p in parts])
        met = torch.cat([p.met for p in parts])
        print(
            f"{args.target}: met for {int(met.sum())}/{len(met)} images with "
            f"{tokens.lengths.float().mean():.1f} tokens on average (range {int(tokens.lengths.min())}-{int(tokens.lengths.max())})"
        )
    else:
        num_tokens = args.num_tokens or args.max_tokens
        kwargs = {} if num_tokens is None else {"num_tokens": num_tokens}
        parts = []
        with torch.inference_mode():
            for batch in batches:
                with autocast(device, args.precision):
                    parts.append(tokenizer.encode(to_device(batch.images, device), **kwargs).to("cpu"))
                kept += batch.indices
        tokens = vtok.Tokens.cat(parts)
    if labels is not None:
        labels = _labels_of(labels, kept, len(files))
    names = [str(files[i]) for i in kept]
    save_tokens(args.out, tokens, tokenizer.fingerprint(), labels=labels, names=names)
    print(f"{len(names)} images -> {tokens.num_positions} positions x {tokens.ids.shape[2]} codes each -> {args.out}")


def _labels_of(labels, kept: list[int], listed: int):
    """One label per encoded image: given per listed file (those of skipped files dropped) or per readable image."""
    if len(labels) == len(kept):
        return labels
    if len(labels) == listed:
        return labels[kept]
    raise VtokError(f"--labels gives {len(labels)} labels for {len(kept)} images")
