"""``vtok reconstruct``: images -> tokens -> images, side by side with their PSNR."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import (
    add_batch,
    add_inputs,
    add_out,
    add_size,
    add_speed,
    add_tokenizer,
    add_workers,
    load_fast,
    table,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reconstruct", help="images -> tokens -> images, side by side with PSNR")
    add_tokenizer(p)
    add_inputs(p)
    add_out(p, "folder for side-by-side PNGs and psnr.json")
    add_size(p)
    add_batch(p)
    add_workers(p)
    add_speed(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from vtok.cli.args import distinct_names
    from vtok.eval.psnr import PSNR_PROTOCOL, psnr_per_image
    from vtok.fast import autocast
    from vtok.images import save_image
    from vtok.io import atomic_path, dumps_json
    from vtok.outputs import check_out_dir
    from vtok.pipeline import device_of
    from vtok.streaming import command_inputs, image_batches, to_device

    check_out_dir(args.out, args.inputs, kind="reconstructions")
    tokenizer = load_fast(args.tokenizer, args)
    files, strict = command_inputs(args.inputs)
    device = device_of(tokenizer)
    out = Path(args.out)
    rows, scores, done = {}, [], 0
    keys = distinct_names([str(f) for f in files])  # a row per input, where base names repeat across folders
    # Batch by batch: the side-by-side PNGs are written as the images stream, so memory does not grow with them.
    for batch in image_batches(files, strict, args.size, args.batch_size, args.workers, device, desc="reconstruct"):
        with torch.inference_mode(), autocast(device, args.precision):
            tokens = tokenizer.encode(to_device(batch.images, device))
            tokens.check_range()
            recon = tokenizer.decode(tokens).float().cpu()
        images = batch.images.cpu()
        values = psnr_per_image(images, recon)
        scores.append(values)
        for j, index in enumerate(batch.indices):
            name = files[index]
            save_image(torch.cat([images[j], recon[j]], dim=-1), out / f"{done:06d}_{Path(name).stem}.png")
            rows[keys[index]] = float(values[j])
            done += 1
    rows["mean"] = float(torch.cat(scores).mean())  # over every image, as names may repeat across folders
    with atomic_path(out / "psnr.json") as tmp:
        tmp.write_text(dumps_json({"psnr_db": rows, "protocol": PSNR_PROTOCOL}, indent=2))
    print("PSNR (dB), original | reconstruction PNGs in", out)
    print(table(rows))
