"""``vtok presets``: the packaged presets by kind, one line each; ``--json`` for machines.

A line is computed from the preset itself: its family (model and quantizer names), its image
size and, with ``--params``, its parameter count (the model built on the meta device: shapes
only, no memory), followed by the first sentence of the file's leading comment.
"""

from __future__ import annotations

import argparse
import json
import shutil
from typing import Any

from vtok.catalog import KINDS, Preset, presets
from vtok.errors import VtokError

HEADINGS = {
    "tokenizer": "tokenizer presets (vtok train NAME, vtok.build('NAME'))",
    "ar": "ar presets (vtok train NAME data.source=TOKENS)",
    "finetune": "finetune overlays (vtok train PRESET --overlay NAME)",
}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("presets", help="list the presets that come with vtok; a name works where a path does")
    p.add_argument("--kind", choices=KINDS, action="append", help="only this kind (repeatable; default: all)")
    p.add_argument(
        "--params", action="store_true", help="count each model's parameters (built on the meta device; seconds)"
    )
    p.add_argument("--json", action="store_true", help="a JSON list of objects instead of the table")
    p.set_defaults(func=run)


def describe(preset: Preset, params: bool = False) -> dict[str, Any]:
    """What ``vtok presets`` says of one preset: name, kind, family, image size, parameters, description, file.

    family / image_size / params are None for overlays, and where the preset does not resolve here
    (then ``error`` says why, in one line).
    """
    row: dict[str, Any] = {"name": preset.name, "kind": preset.kind, "family": None, "image_size": None}
    row.update(params=None, description=preset.summary(), file=str(preset.resource))
    if preset.kind == "finetune":
        return row
    try:
        import vtok

        cfg = vtok.load_config(preset.read())
        model = cfg["model"]
        quantizer = model.get("quantizer")
        row["family"] = model["name"] + (f"/{quantizer['name']}" if isinstance(quantizer, dict) else "")
        if preset.kind == "tokenizer":
            row["image_size"] = cfg["data"]["image_size"]
        if params:
            row["params"] = count_parameters(model)
    except VtokError as err:
        row["error"] = str(err)
    return row


def count_parameters(model: dict[str, Any]) -> int:
    """Parameters of a resolved model spec, built on the meta device (no weights: fast even at billions)."""
    import torch

    from vtok.config import build_component

    with torch.device("meta"):
        module = build_component("model", model, "model")
    return sum(p.numel() for p in module.parameters())


def line(row: dict[str, Any], widths: tuple[int, int], params: bool, columns: int) -> str:
    """One table line (name, family, image size, parameters, description), cut to the terminal's width."""
    text = f"  {row['name']:<{widths[0]}}  "
    if row["kind"] != "finetune":
        size = f"{row['image_size']}px" if row["image_size"] else ""
        text += f"{row['family'] or '?':<{widths[1]}}  {size:>5}  "
        text += f"{_millions(row['params']) if row['params'] is not None else '':>7}  " if params else ""
    text += row["description"] if "error" not in row else f"(does not resolve: {row['error']})"
    return text if len(text) <= columns else text[: columns - 3] + "..."


def run(args: argparse.Namespace) -> None:
    rows = [describe(p, args.params) for p in presets(args.kind or KINDS)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    widths = (max(len(r["name"]) for r in rows), max(len(r["family"] or "?") for r in rows))
    columns = max(shutil.get_terminal_size((120, 24)).columns, 80)
    for kind in args.kind or KINDS:
        print(HEADINGS[kind] + ":")
        for row in rows:
            if row["kind"] == kind:
                print(line(row, widths, args.params, columns))


def _millions(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.1f}M"
