"""``vtok push``: upload a vtok model folder to the Hugging Face Hub with a model card."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("push", help="upload a vtok model folder to the Hugging Face Hub with a model card")
    p.add_argument("model", help="a vtok model folder (RUN/final or a converted model)")
    p.add_argument("repo", help="Hub repository id, org/name (created if missing)")
    p.add_argument("--data", default=None, help="the training data, named in the model card")
    p.add_argument("--results", default=None, help="REPORT/results.json written by vtok eval, tabled in the card")
    p.add_argument("--private", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from vtok.hub import push

    url = push(args.model, args.repo, data=args.data, results=args.results, private=args.private)
    print(f"{args.model} -> {url}")
