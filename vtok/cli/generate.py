"""``vtok generate``: sample tokens from an AR model and decode them into an image grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import SAMPLES, SEED, add_batch, add_out, add_speed, add_tokenizer, int_list, load_fast
from vtok.errors import VtokError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from vtok.ar_models.sample import SamplingConfig
    from vtok.config import field_arg

    p = subparsers.add_parser("generate", help="sample tokens from an AR model and decode them into an image grid")
    p.add_argument("--model", required=True, help="folder of a trained AR model (RUN/final)")
    add_tokenizer(p)
    p.add_argument("--classes", default=None, help="comma-separated class ids (one grid row each); none: unconditional")
    p.add_argument("--per-class", type=SAMPLES, default=4, help="samples per class")
    p.add_argument("--num", type=SAMPLES, default=8, help="unconditional samples")
    sampling = SamplingConfig
    p.add_argument(
        "--cfg", type=field_arg(sampling, "cfg_scale"), default=1.0, help="classifier-free guidance scale (1: off)"
    )
    p.add_argument("--cfg-schedule", default="constant", choices=["constant", "linear"])
    p.add_argument("--temperature", type=field_arg(sampling, "temperature"), default=1.0)
    p.add_argument("--top-k", type=field_arg(sampling, "top_k"), default=0, help="0: off")
    p.add_argument("--top-p", type=field_arg(sampling, "top_p"), default=1.0, help="nucleus share; 1: off")
    p.add_argument("--seed", type=SEED, default=0)
    add_out(p, "grid PNG; the tokens go beside it as .safetensors")
    add_batch(p)
    add_speed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from vtok.ar_models.gpt import GPT
    from vtok.ar_models.sample import SamplingConfig, generate
    from vtok.images import make_grid, save_image
    from vtok.memory import check_memory, generated_bytes
    from vtok.outputs import check_out_file, is_token_file, is_vtok_image
    from vtok.pipeline import decode_batched
    from vtok.shards import check_trained_on
    from vtok.tokens import save_tokens

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise VtokError(f"--out {out} must name a .png file (the sample grid; the tokens go beside it)")
    token_file = out.with_suffix(".safetensors")
    # The grid and its token file are one output: either is replaced only where vtok wrote this grid.
    grid = lambda p: is_vtok_image(out, "sample grid")  # noqa: E731
    check_out_file(token_file, [args.model, args.tokenizer], lambda p: is_token_file(p) and grid(p), kind="token file")
    check_out_file(out, [args.model, args.tokenizer], grid, kind="sample grid")
    classes = int_list(args.classes, "--classes") if args.classes else None  # bounded ids, before any loading
    model = load_fast(args.model, args)
    if not isinstance(model, GPT):
        raise VtokError(f"{args.model} is not an AR model")
    tokenizer = load_fast(args.tokenizer, args)
    check_trained_on(args.model, tokenizer)
    count = len(classes) * args.per_class if classes else args.num
    check_memory(generated_bytes(model, tokenizer, count), f"{count} samples", "generate fewer at a time")
    labels = torch.tensor(classes).repeat_interleave(args.per_class) if classes else None
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p, args.cfg, args.cfg_schedule, args.seed)
    num = args.num if labels is None else None
    tokens = generate(model, labels, num, sampling, progress=True, precision=args.precision, compile=args.compile)
    tokens = tokens.to("cpu")
    tokens.check_range()
    images = decode_batched(tokenizer, tokens, args.batch_size, precision=args.precision)
    ncol = args.per_class if args.classes else min(8, len(images))
    save_image(make_grid(images, ncol=ncol), out, what="sample grid")
    save_tokens(token_file, tokens, tokenizer.fingerprint(), labels=labels)
    print(f"{len(images)} images -> {out} (tokens: {token_file})")
