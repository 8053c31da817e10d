"""``vtok train``: train a model from a YAML preset; re-run to resume."""

from __future__ import annotations

import argparse
from pathlib import Path

from vtok.cli.args import add_out, add_overrides
from vtok.errors import VtokError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML preset; re-run to resume")
    p.add_argument(
        "config", help="preset name (vtok presets) or YAML path, e.g. vq_f16 or configs/tokenizer/vq_f16.yaml"
    )
    add_overrides(p, "dotted overrides: train.steps=1000 model.quantizer.codebook_size=4096")
    add_out(p, "run folder (checkpoints, metrics.jsonl, samples/, final/)")
    p.add_argument(
        "--overlay",
        action="append",
        default=[],
        help="a partial preset merged over CONFIG before the overrides: a name (decoder, whole) or a YAML path",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    import vtok
    from vtok.memory import check_training
    from vtok.outputs import check_out_dir, run_lock
    from vtok.registry import lookup

    cfg = vtok.load_config(args.config, args.overrides, args.overlay)
    data = [cfg["data"]["source"]] if cfg["data"].get("source") not in (None, "builtin") else []
    # A preset given by name is read from the package, not from a path beside the run: only files are inputs.
    files = [c for c in (args.config, *args.overlay) if Path(c).exists()]
    check_out_dir(args.out, [*files, *data], kind="run folder")
    name = cfg["model"]["name"]
    trainer = getattr(lookup("model", name), "trained_by", None)  # the model class names its trainer
    if trainer is None:
        raise VtokError(f"model {name!r} has no trainer")
    check_training(cfg)  # batch, image side and codebooks against the memory there is, before any layer
    with run_lock(args.out):
        final = lookup("trainer", trainer)(cfg, args.out).train()
    print(f"trained model saved to {final}")
