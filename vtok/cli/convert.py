"""``vtok convert``: a public checkpoint as a vtok model; the sources and their help come from the registry."""

from __future__ import annotations

import argparse

from vtok.cli.args import add_out


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from vtok.convert import sources

    table = sources()
    titles = ", ".join(dict.fromkeys(s.title for s in table.values()))
    p = subparsers.add_parser("convert", help=f"a public checkpoint ({titles}) as a vtok model")
    p.add_argument("--from", dest="source", required=True, choices=list(table))
    p.add_argument("checkpoint", help="the source file (.pt/.ckpt/.bin/.safetensors) or Hub id org/name[/file]")
    by_help: dict[str, list[str]] = {}  # sources that take the same kind of config file share one phrase
    for s in table.values():
        if s.takes_config:
            by_help.setdefault(s.config_help, []).append(s.title)
    p.add_argument(
        "--config",
        default=None,
        help="; ".join(f"{' / '.join(titles)}: {text}" for text, titles in by_help.items()),
    )
    add_out(p, "folder for the vtok model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from vtok.convert import convert
    from vtok.outputs import check_out_dir

    check_out_dir(args.out, [args.checkpoint], kind="vtok model folder")  # replaces only a model convert wrote
    model = convert(args.source, args.checkpoint, args.out, config=args.config)
    n = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"{args.source} {args.checkpoint} -> {args.out} ({model.spec['name']}, {n:.1f}M parameters); load with vtok.load"
    )
