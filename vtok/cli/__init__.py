"""The ``vtok`` command: thin subcommands over library functions, one module a command.

Each command module (:mod:`~vtok.cli.train`, :mod:`~vtok.cli.encode`, ...) declares its
flags in ``add_parser(subparsers)`` (shared flags come from :mod:`vtok.cli.args`) and
does its work in ``run(args)``. Bad input (missing files, unreadable images, wrong
configs or checkpoints) ends with one line ``vtok: error: ...`` and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from vtok import __version__
from vtok.cli import bench, convert, decode, demo_command, encode, generate, presets, push, reconstruct, train
from vtok.cli import eval as eval_command  # the module, not the builtin
from vtok.cli.args import Parser
from vtok.errors import VtokError

# In the order ``vtok --help`` lists them.
COMMANDS = (train, encode, decode, reconstruct, convert, push, generate, eval_command, bench, demo_command, presets)


def build_parser() -> argparse.ArgumentParser:
    """The ``vtok`` parser, one subcommand per module of :data:`COMMANDS`."""
    parser = Parser(prog="vtok", description="Discrete visual tokenizers: train, encode, decode.")
    parser.add_argument("--version", action="version", version=f"vtok {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 with one error line for bad input, 130 when interrupted)."""
    logging.basicConfig(level=logging.WARNING, format="vtok: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except VtokError as err:
        print(f"vtok: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`vtok presets | head`): stop quietly, as SIGPIPE would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when stdout is flushed
        return 141
    except OSError as err:  # disk full, read-only or vanished paths met while writing: one line naming the path
        from vtok.outputs import os_error_line

        print(f"vtok: error: {os_error_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vtok: interrupted", file=sys.stderr)
        return 130
    finally:
        _leave_process_group()
    return 0


def _leave_process_group() -> None:
    """Tear down ``torch.distributed`` before the interpreter does, on every rank of a launch.

    A gloo group left to interpreter shutdown destroys its worker threads while they are still
    joinable, and the process dies with "terminate called without an active exception" (SIGABRT)
    after its work is done; the launcher then kills the other ranks, and the run fails. A rank
    that finishes first (a smaller share of an evaluation) met this about once in 25 launches.
    """
    if "torch.distributed" not in sys.modules:  # never imported: no group, and no torch import for light commands
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
