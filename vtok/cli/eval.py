"""``vtok eval``: rFID, PSNR/SSIM/LPIPS, codebook and TokBench text/face fidelity, with a report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vtok.cli.args import add_batch, add_device, add_out, add_tokenizer, add_workers, int_list, require_tokenizer
from vtok.config import AT_LEAST_1, number_arg
from vtok.errors import VtokError

if TYPE_CHECKING:
    from vtok.eval.protocols import Protocol
    from vtok.known import KnownCheckpoint

DEFAULT_METRICS = "rfid,psnr,ssim,lpips,codebook,text,face"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval", help="rFID, PSNR/SSIM/LPIPS, codebook and TokBench text/face fidelity, with a report"
    )
    add_tokenizer(p, required=False)
    p.add_argument("--recon", default=None, help="folder of reconstructions made elsewhere, mirroring the data's files")
    p.add_argument(
        "--data",
        default="builtin",
        help="'builtin', a VTBench set (vtbench-documents, -posters, -multilingual, -detail, -highres, -varying), "
        "an image folder, a TokBench folder or a VTBench folder (default: builtin)",
    )
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated metric names (default: {DEFAULT_METRICS}; a protocol's own; cer,wer: whole-image OCR)",
    )
    p.add_argument(
        "--resolution",
        type=number_arg(int, AT_LEAST_1),
        default=None,
        help="image side (default 256; with --protocol: the model's); TokBench setting 256/512/1024 for text/face",
    )
    p.add_argument(
        "--protocol",
        default=None,
        help="a pinned protocol, e.g. imagenet-val: its crop, images, reference and Inception, written in the report",
    )
    p.add_argument(
        "--count",
        type=number_arg(int, AT_LEAST_1),
        default=None,
        help="with --protocol: score the first N of its images instead of all (stated in the report)",
    )
    p.add_argument(
        "--fit",
        choices=("crop", "native", "grid", "tiles"),
        default=None,
        help="VTBench sets and cer/wer: how images reach the tokenizer (default: the set's own)",
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
    add_device(p)
    add_out(p, "report folder: results.json, results.md, grids")
    add_batch(p)
    add_workers(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import vtok
    from vtok.eval.evaluate import evaluate
    from vtok.eval.protocols import write_reference_stats
    from vtok.eval.report import table, write_report
    from vtok.known import find_known, model_sha256, published_resolution, published_rows
    from vtok.memory import check_memory, image_bytes
    from vtok.outputs import check_out_dir
    from vtok.ranks import current_ranks

    if (args.tokenizer is None) == (args.recon is None):
        raise VtokError("give exactly one of --tokenizer DIR or --recon DIR")
    protocol = _protocol(args)
    inputs = [p for p in (args.data, args.recon, args.tokenizer) if p and p != "builtin"]
    check_out_dir(args.out, inputs, kind="report")
    if protocol is None:  # a protocol's resolution is the model's, known once it is loaded
        check_memory(image_bytes(args.batch_size, args.resolution), f"--resolution {args.resolution}", "lower it")
    ranks = current_ranks()  # under accelerate launch: each rank scores its block, rank 0 merges and reports
    args.device = ranks.device(args.device)
    tokenizer = require_tokenizer(vtok.load(args.tokenizer).eval(), args.tokenizer) if args.tokenizer else None
    known = find_known(model_sha256(tokenizer))
    pinned = None
    if protocol is not None:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
        pinned = protocol.resolve(
            args.data, args.count, args.resolution, tokenizer, published_resolution(known), metrics
        )
        args.resolution, args.metrics = pinned.resolution, ",".join(pinned.metrics)
        check_memory(image_bytes(args.batch_size, args.resolution), f"--resolution {args.resolution}", "lower it")
    tokenizer = tokenizer.to(args.device) if tokenizer is not None else None
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
        workers=args.workers,
        ranks=ranks,
        fit=args.fit,
        pinned=pinned,
    )
    if not ranks.main:
        return
    name = args.name or Path(args.tokenizer or args.recon).name
    if known is not None:
        rows = published_rows(known, result.scores, args.resolution, result.pinned)
        result.published = {**_release(known), "rows": rows}
    write_report(result, out, name, {"tokenizer": args.tokenizer, "recon": args.recon})
    if pinned is not None and pinned.reference is not None:
        write_reference_stats(pinned, out / "reference_stats.npz")
    print(f"{name} on {args.data} at {args.resolution}px ({result.info.get('seconds')} s); report in {out}")
    print(table(result))
    if args.tokens:
        _rate_distortion(tokenizer, args, out, name)


def _protocol(args: argparse.Namespace) -> Protocol | None:
    """The ``--protocol`` asked for (None without one); the defaults of a run without one filled in."""
    from vtok.eval.protocols import lookup_protocol

    if args.protocol is None:
        if args.count is not None:
            raise VtokError("--count needs --protocol: it says how many of the protocol's images are scored")
        args.resolution = args.resolution or 256
        args.metrics = args.metrics or DEFAULT_METRICS
        return None
    return lookup_protocol(args.protocol)


def _release(known: KnownCheckpoint) -> dict[str, Any]:
    """A known release's identity, for the report."""
    return {"checkpoint": known.name, "repo": known.repo, "file": known.file, "sha256": known.sha256,
            "sha256_from": known.sha256_from}  # fmt: skip


def _rate_distortion(tokenizer, args: argparse.Namespace, out: Path, name: str) -> None:
    """``--tokens``: the metrics at each token budget, plotted."""
    from vtok.eval.rate import rate_distortion, write_rate_distortion

    if tokenizer is None:
        raise VtokError("--tokens needs --tokenizer (reconstructions have a fixed rate)")
    budgets = int_list(args.tokens, "--tokens")
    rows = rate_distortion(tokenizer, budgets, args.metrics.split(","), args.data, args.resolution, args.batch_size)
    write_rate_distortion(rows, out, name)
    print(f"rate-distortion over {budgets} tokens: {out / 'rate_distortion.png'}")
