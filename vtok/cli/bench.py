"""``vtok bench``: a leaderboard of several tokenizers, the classic codecs at their bits and a continuous reference."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import INT32, add_batch, add_device, add_out, int_list, require_tokenizer
from vtok.config import AT_LEAST_1, NON_NEGATIVE, Range, number_arg
from vtok.errors import VtokError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="a leaderboard: tokenizers, classic VQ and JPEG/WebP at their bits, an R-D plot and crops"
    )
    p.add_argument(
        "--tokenizer",
        action="append",
        required=True,
        help="a saved tokenizer (folder or Hub id org/name[@revision]); repeat for each tokenizer",
    )
    p.add_argument("--name", action="append", default=None, help="row name of each --tokenizer, in order")
    p.add_argument(
        "--data",
        action="append",
        default=None,
        help="a set as vtok eval --data takes it ('builtin', vtbench-documents and VTBench's other sets, an image "
        "folder); repeat for several (default: builtin)",
    )
    p.add_argument(
        "--metrics",
        default=None,
        help="comma-separated metric names (default: psnr,ssim,lpips,rfid; on VTBench's text sets "
        "psnr,ssim,lpips,cer,wer)",
    )
    p.add_argument("--resolution", type=number_arg(int, AT_LEAST_1), default=256, help="image side (default: 256)")
    p.add_argument(
        "--tokens",
        default=None,
        help="token budgets of variable-length tokenizers, e.g. 8,16,32 (default: a quarter, a half and all)",
    )
    p.add_argument(
        "--reference-ae",
        default=None,
        help="a diffusers AutoencoderKL (folder or Hub id) scored as the continuous reference row",
    )
    p.add_argument(
        "--crops",
        type=number_arg(int, NON_NEGATIVE),
        default=16,
        help="images per set shown in leaderboard.html (default: 16)",
    )
    p.add_argument(
        "--fit-images",
        type=number_arg(int, Range(16, 65536)),
        default=1024,  # eval.leaderboard_methods.FIT_IMAGES, not imported here: the parser stays light
        help="training images classic VQ is fitted on, a multiple of 16 (default: 1024, as vtok demo; fewer fit faster)",
    )
    add_device(p)
    add_out(p, "leaderboard folder: leaderboard.json/.md, rate_distortion.png, leaderboard.html, crops/")
    add_batch(p)
    p.set_defaults(func=run)


def row_names(paths: list[str], names: list[str] | None) -> list[str]:
    """Each tokenizer's row name: ``--name`` where given, else its folder's name (a run's ``final`` folder is
    named after the run), made distinct."""
    from vtok.cli.args import distinct_names

    if names is not None and len(names) != len(paths):
        raise VtokError(f"--name given {len(names)} times for {len(paths)} --tokenizer; give one per tokenizer")
    if names is not None:
        if len(set(names)) != len(names):
            raise VtokError("--name: two tokenizers share a name; give each row its own")
        return names
    stems = [str(Path(p).parent) if Path(p).name == "final" else p for p in paths]
    return distinct_names(stems)


def run(args: argparse.Namespace) -> None:
    import vtok
    from vtok.eval.evaluate import parse_metrics
    from vtok.eval.leaderboard import Bench, probe, run_leaderboard
    from vtok.eval.leaderboard_methods import Method
    from vtok.outputs import check_out_dir

    sets = args.data or ["builtin"]
    metrics = parse_metrics(args.metrics) if args.metrics is not None else None
    budgets = int_list(args.tokens, "--tokens", Range(1, INT32)) if args.tokens else None
    names = row_names(args.tokenizer, args.name)
    for data in sets:
        probe(data, args.resolution)  # a missing or empty set: one line now, not a reason in every row
    inputs = [p for p in (*args.tokenizer, *sets, args.reference_ae) if p and p != "builtin" and Path(p).exists()]
    out = check_out_dir(args.out, inputs, kind="leaderboard")
    tokenizers = []
    for name, path in zip(names, args.tokenizer, strict=True):
        model = require_tokenizer(vtok.load(path).eval(), path).to(args.device)
        tokenizers.append((name, model, model.fingerprint()))
    reference = None
    if args.reference_ae:
        from vtok.eval.reference_ae import (
            autoencoder_fingerprint,
            autoencoder_info,
            autoencoder_reconstruct,
            load_autoencoder_kl,
        )

        ae = load_autoencoder_kl(args.reference_ae, args.device)
        info = autoencoder_info(ae, args.reference_ae)
        name = Path(args.reference_ae).name or args.reference_ae
        key = f"autoencoder_kl {autoencoder_fingerprint(ae)}"
        reference = Method(name, "reference", name, autoencoder_reconstruct(ae), None, key=key, info=info)
    if args.fit_images % 16:
        raise VtokError(f"--fit-images {args.fit_images}: the training stream comes in batches of 16; give a multiple")
    bench = Bench(metrics, args.resolution, out, args.batch_size, args.device, args.crops, fit_images=args.fit_images)
    run_leaderboard(tokenizers, sets, bench, budgets, reference)
    print((out / "leaderboard.md").read_text(), end="")
    print(f"leaderboard in {out}: leaderboard.md, leaderboard.json, rate_distortion.png, leaderboard.html")
