"""The ``vtok`` command: thin subcommands over library functions.

Bad input (missing files, unreadable images, wrong configs or checkpoints) ends
with one line ``vtok: error: ...`` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from vtok.config import AT_LEAST_1, number_arg
from vtok.errors import VtokError

COUNT = number_arg(int, AT_LEAST_1)


class _Parser(argparse.ArgumentParser):
    """argparse with vtok's error contract: one ``vtok: error:`` line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vtok: error: {self.prog}: {message}\n")


def _add_tokenizer(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tokenizer",
        required=True,
        help="a saved tokenizer: folder (config.json + model.safetensors) or Hub id org/name[@revision]",
    )


def _add_batch(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=COUNT, default=16)


def _add_speed(p: argparse.ArgumentParser) -> None:
    from vtok.fast import PRECISIONS

    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1 (default: cpu)")
    p.add_argument(
        "--precision", default="fp32", choices=list(PRECISIONS), help="bf16: autocast (quantization stays fp32)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (static shapes)")
    p.add_argument("--channels-last", action="store_true", help="CNN weights and inputs in NHWC (faster on GPUs)")


def _load_fast(path: str, args: argparse.Namespace):
    """A saved model on ``--device``, sped up as the speed flags ask (compile problems: one line, before loading)."""
    import torch

    import vtok
    from vtok.fast import accelerate, require_compile

    if args.compile:
        require_compile()
    try:
        device = torch.device(args.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise VtokError(f"--device {args.device}: {str(err).splitlines()[0]}") from None
    model = vtok.load(path).to(device).eval()
    if isinstance(model, vtok.Tokenizer):
        accelerate(model, compile=args.compile, channels_last=args.channels_last)
    return model


def _add_size(p: argparse.ArgumentParser) -> None:
    from vtok.data import IMAGE_SIZE

    p.add_argument(
        "--size", type=number_arg(int, IMAGE_SIZE), default=None, help="resize and center-crop to SIZE (ADM)"
    )


def _int_list(text: str, flag: str) -> list[int]:
    """'1,207,360' -> [1, 207, 360]; a one-line error naming the flag otherwise."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise VtokError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _table(rows: dict[str, object]) -> str:
    width = max(len(k) for k in rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"  {k:<{width}}  {fmt(v)}" for k, v in rows.items())


def cmd_train(args: argparse.Namespace) -> None:
    import vtok
    from vtok.outputs import check_out_dir

    cfg = vtok.load_config(args.config, args.overrides, args.overlay)
    check_out_dir(
        args.out, [args.config, *args.overlay], replaceable=lambda p: (p / "config.json").is_file(), kind="run folder"
    )
    from vtok.ar_models.gpt import GPT
    from vtok.ar_models.train import train_ar
    from vtok.registry import lookup
    from vtok.tokenizers.train import train_tokenizer

    model_cls = lookup("model", cfg["model"]["name"])
    if issubclass(model_cls, GPT):
        final = train_ar(cfg, args.out)
    elif issubclass(model_cls, vtok.Tokenizer):
        final = train_tokenizer(cfg, args.out)
    else:
        raise VtokError(f"model {cfg['model']['name']!r} has no trainer")
    print(f"trained model saved to {final}")


def cmd_encode(args: argparse.Namespace) -> None:
    import torch

    import vtok
    from vtok.data import load_inputs
    from vtok.outputs import check_out_dir, check_out_file, is_token_file
    from vtok.pipeline import encode_batched
    from vtok.tokens import save_tokens

    if args.shards is not None:
        if len(args.inputs) != 1 or args.size is None:
            raise VtokError("--shards encodes one data source (builtin or a folder) and needs --size")
        check_out_dir(args.out, [i for i in args.inputs if i != "builtin"], kind="shard folder")
    else:
        check_out_file(args.out, args.inputs, is_token_file, kind="token file")
    tokenizer = _load_fast(args.tokenizer, args)
    if args.shards is not None:
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
        print(
            f"{index['count']} images, {len(index['classes'])} classes -> {len(index['shards'])} shards in {args.out}"
        )
        return
    names, images = load_inputs(args.inputs, args.size)
    labels = None
    if args.labels is not None:  # checked before the work, not after it
        labels = torch.tensor(_int_list(args.labels, "--labels"))
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


def cmd_decode(args: argparse.Namespace) -> None:
    from vtok.images import save_image
    from vtok.outputs import check_out_dir
    from vtok.pipeline import decode_batched
    from vtok.tokens import load_tokens

    check_out_dir(args.out, [args.tokens], kind="decoded images")
    tokenizer = _load_fast(args.tokenizer, args)
    file = load_tokens(args.tokens, expect=tokenizer)
    images = decode_batched(tokenizer, file.tokens, args.batch_size, precision=args.precision)
    out = Path(args.out)
    names = file.names or [f"{i:06d}" for i in range(len(images))]
    for i, (name, image) in enumerate(zip(names, images)):
        save_image(image, out / f"{i:06d}_{Path(name).stem}.png")
    print(f"{len(images)} images -> {out}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    import torch

    from vtok.data import load_inputs
    from vtok.eval.psnr import PSNR_PROTOCOL, psnr_per_image
    from vtok.images import save_image
    from vtok.io import atomic_path, dumps_json
    from vtok.outputs import check_out_dir
    from vtok.pipeline import decode_batched, encode_batched

    check_out_dir(args.out, args.inputs, kind="reconstructions")
    tokenizer = _load_fast(args.tokenizer, args)
    names, images = load_inputs(args.inputs, args.size)
    tokens = encode_batched(tokenizer, images, args.batch_size, precision=args.precision)
    recon = decode_batched(tokenizer, tokens, args.batch_size, precision=args.precision)
    values = psnr_per_image(images, recon)
    out = Path(args.out)
    rows = {}
    for i, name in enumerate(names):
        save_image(torch.cat([images[i], recon[i]], dim=-1), out / f"{i:06d}_{Path(name).stem}.png")
        rows[Path(name).name] = float(values[i])
    rows["mean"] = float(values.mean())
    with atomic_path(out / "psnr.json") as tmp:
        tmp.write_text(dumps_json({"psnr_db": rows, "protocol": PSNR_PROTOCOL}, indent=2))
    print("PSNR (dB), original | reconstruction PNGs in", out)
    print(_table(rows))


def cmd_demo(args: argparse.Namespace) -> None:
    from vtok.cli.demo import run_demo
    from vtok.outputs import check_out_dir

    check_out_dir(args.out, kind="demo folder")

    result = run_demo(args.out, args.overrides)
    rows = {k: v for k, v in result.items() if not isinstance(v, dict | list)}
    rows["classic_vq psnr (same bits)"] = result["classic_vq"]["psnr"]
    rows["colour_error (R, G, B)"] = ", ".join(f"{e:+.3f}" for e in result["colour_error"])
    print(f"held-out reconstructions: {Path(args.out) / 'heldout.png'}  (originals above reconstructions)")
    print(_table(rows))


def cmd_eval(args: argparse.Namespace) -> None:
    import vtok
    from vtok.eval.evaluate import evaluate
    from vtok.eval.report import table, write_report
    from vtok.outputs import check_out_dir

    if (args.tokenizer is None) == (args.recon is None):
        raise VtokError("give exactly one of --tokenizer DIR or --recon DIR")
    inputs = [p for p in (args.data, args.recon, args.tokenizer) if p and p != "builtin"]
    check_out_dir(args.out, inputs, kind="report")
    tokenizer = vtok.load(args.tokenizer).eval() if args.tokenizer else None
    out = Path(args.out)
    result = evaluate(
        args.metrics,
        data=args.data,
        tokenizer=tokenizer,
        recon_dir=args.recon,
        resolution=args.resolution,
        batch_size=args.batch_size,
        recognizer=args.recognizer,
        embedder=args.face_embedder,
        detail_dir=out / "detail_set",
        reference=args.reference,
        device=args.device,
    )
    name = args.name or Path(args.tokenizer or args.recon).name
    write_report(result, out, name, {"tokenizer": args.tokenizer, "recon": args.recon})
    print(f"{name} on {args.data} at {args.resolution}px ({result.info.get('seconds')} s); report in {out}")
    print(table(result))
    if args.tokens:
        from vtok.eval.rate import rate_distortion, write_rate_distortion

        if tokenizer is None:
            raise VtokError("--tokens needs --tokenizer (reconstructions have a fixed rate)")
        budgets = _int_list(args.tokens, "--tokens")
        rows = rate_distortion(tokenizer, budgets, args.metrics.split(","), args.data, args.resolution, args.batch_size)
        write_rate_distortion(rows, out, name)
        print(f"rate-distortion over {budgets} tokens: {out / 'rate_distortion.png'}")


def cmd_generate(args: argparse.Namespace) -> None:
    import torch

    from vtok.ar_models.gpt import GPT
    from vtok.ar_models.sample import SamplingConfig, generate
    from vtok.images import make_grid, save_image
    from vtok.outputs import check_out_file, is_token_file
    from vtok.shards import check_trained_on
    from vtok.tokens import save_tokens

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise VtokError(f"--out {out} must name a .png file (the sample grid; the tokens go beside it)")
    token_file = out.with_suffix(".safetensors")
    check_out_file(token_file, [args.model, args.tokenizer], is_token_file, kind="token file")
    check_out_file(out, [args.model, args.tokenizer], lambda p: is_token_file(token_file), kind="sample grid")
    model = _load_fast(args.model, args)
    if not isinstance(model, GPT):
        raise VtokError(f"{args.model} is not an AR model")
    tokenizer = _load_fast(args.tokenizer, args)
    check_trained_on(args.model, tokenizer)
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p, args.cfg, args.cfg_schedule, args.seed)
    if args.classes:
        labels = torch.tensor(_int_list(args.classes, "--classes")).repeat_interleave(args.per_class)
    else:
        labels = None
    num = args.num if labels is None else None
    tokens = generate(model, labels, num, sampling, progress=True, precision=args.precision, compile=args.compile)
    tokens = tokens.to("cpu")
    tokens.check_range()
    from vtok.pipeline import decode_batched

    images = decode_batched(tokenizer, tokens, args.batch_size, precision=args.precision)
    ncol = args.per_class if args.classes else min(8, len(images))
    save_image(make_grid(images, ncol=ncol), out)
    save_tokens(token_file, tokens, tokenizer.fingerprint(), labels=labels)
    print(f"{len(images)} images -> {out} (tokens: {token_file})")


def cmd_convert(args: argparse.Namespace) -> None:
    from vtok.convert import convert
    from vtok.outputs import check_out_dir, is_model_folder

    check_out_dir(args.out, [args.checkpoint], replaceable=is_model_folder, kind="vtok model folder")
    model = convert(args.source, args.checkpoint, args.out, config=args.config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{args.source} {args.checkpoint} -> {args.out} ({model.spec['name']}, {n:.1f}M parameters); load with vtok.load"
    )


def cmd_push(args: argparse.Namespace) -> None:
    from vtok.hub import push

    url = push(args.model, args.repo, data=args.data, results=args.results, private=args.private)
    print(f"{args.model} -> {url}")


def build_parser() -> argparse.ArgumentParser:
    from vtok.ar_models.sample import SamplingConfig
    from vtok.config import field_arg

    parser = _Parser(prog="vtok", description="Discrete visual tokenizers: train, encode, decode.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a YAML preset; re-run to resume")
    p.add_argument("config", help="YAML preset, e.g. configs/tokenizer/vq_f16.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides: train.steps=1000 model.quantizer.codebook_size=4096")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics.jsonl, samples/, final/)")
    p.add_argument(
        "--overlay",
        action="append",
        default=[],
        help="a partial preset merged over CONFIG before the overrides, e.g. configs/finetune/decoder.yaml",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("encode", help="images -> token file (safetensors)")
    _add_tokenizer(p)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="token file to write")
    _add_size(p)
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
    _add_batch(p)
    _add_speed(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="token file -> PNG images")
    p.add_argument("tokens", help="token file written by `vtok encode`")
    _add_tokenizer(p)
    p.add_argument("--out", required=True, help="folder for the PNGs")
    _add_batch(p)
    _add_speed(p)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("reconstruct", help="images -> tokens -> images, side by side with PSNR")
    _add_tokenizer(p)
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("--out", required=True, help="folder for side-by-side PNGs and psnr.json")
    _add_size(p)
    _add_batch(p)
    _add_speed(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser(
        "convert",
        help="a public checkpoint (LlamaGen VQ/GPT, taming VQGAN, TiTok, One-D-Piece, VAR, Open-MAGVIT2, TokenFlow) as a vtok model",
    )
    from vtok.convert import SOURCES

    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES))
    p.add_argument("checkpoint", help="the source file (.pt/.ckpt/.bin/.safetensors) or Hub id org/name[/file]")
    p.add_argument(
        "--config",
        default=None,
        help="TiTok / One-D-Piece: the source's YAML or config.json; VAR: v_patch_nums; Open-MAGVIT2: factorized_bits; "
        "TokenFlow: image_size (256 or 224), scale_rq_layers "
        "(optional)",
    )
    p.add_argument("--out", required=True, help="folder for the vtok model")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("push", help="upload a vtok model folder to the Hugging Face Hub with a model card")
    p.add_argument("model", help="a vtok model folder (RUN/final or a converted model)")
    p.add_argument("repo", help="Hub repository id, org/name (created if missing)")
    p.add_argument("--data", default=None, help="the training data, named in the model card")
    p.add_argument("--results", default=None, help="REPORT/results.json written by vtok eval, tabled in the card")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("generate", help="sample tokens from an AR model and decode them into an image grid")
    p.add_argument("--model", required=True, help="folder of a trained AR model (RUN/final)")
    _add_tokenizer(p)
    p.add_argument("--classes", default=None, help="comma-separated class ids (one grid row each); none: unconditional")
    p.add_argument("--per-class", type=COUNT, default=4, help="samples per class")
    p.add_argument("--num", type=COUNT, default=8, help="unconditional samples")
    sampling = SamplingConfig
    p.add_argument(
        "--cfg", type=field_arg(sampling, "cfg_scale"), default=1.0, help="classifier-free guidance scale (1: off)"
    )
    p.add_argument("--cfg-schedule", default="constant", choices=["constant", "linear"])
    p.add_argument("--temperature", type=field_arg(sampling, "temperature"), default=1.0)
    p.add_argument("--top-k", type=field_arg(sampling, "top_k"), default=0, help="0: off")
    p.add_argument("--top-p", type=field_arg(sampling, "top_p"), default=1.0, help="nucleus share; 1: off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="grid PNG; the tokens go beside it as .safetensors")
    _add_batch(p)
    _add_speed(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="rFID, PSNR/SSIM/LPIPS, codebook and TokBench text/face fidelity, with a report")
    p.add_argument("--tokenizer", default=None, help="folder of a saved tokenizer")
    p.add_argument("--recon", default=None, help="folder of reconstructions made elsewhere, mirroring the data's files")
    p.add_argument(
        "--data", default="builtin", help="'builtin', an image folder, or a TokBench folder (default: builtin)"
    )
    p.add_argument("--metrics", default="rfid,psnr,ssim,lpips,codebook,text,face", help="comma-separated metric names")
    p.add_argument(
        "--resolution",
        type=number_arg(int, AT_LEAST_1),
        default=256,
        help="image side; TokBench setting 256/512/1024 for text/face",
    )
    p.add_argument("--recognizer", default="rapidocr", help="text recogniser: rapidocr (offline) or doctr_parseq")
    p.add_argument("--face-embedder", default="dlib", help="face embedder: dlib (offline, L2) or antelopev2 (cosine)")
    p.add_argument("--name", default=None, help="method name in the tables (default: the folder's name)")
    p.add_argument("--reference", default=None, help="gfid: reference statistics (ADM .npz) or a folder of real images")
    p.add_argument(
        "--tokens",
        default=None,
        help="variable-length tokenizers: token budgets for a rate-distortion plot, e.g. 32,64,128",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", required=True, help="report folder: results.json, results.md, grids")
    _add_batch(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "demo", help="train a small VQ tokenizer on the built-in photos, then reconstruct held-out crops"
    )
    p.add_argument("--out", default="vtok-demo", help="output folder (default: vtok-demo)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of configs/tokenizer/vq_demo.yaml")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="vtok: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VtokError as err:
        print(f"vtok: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # disk full, read-only or vanished paths met while writing: one line naming the path
        from vtok.outputs import os_error_line

        print(f"vtok: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vtok: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
