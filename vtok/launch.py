"""``python -m vtok.launch ARGS`` = ``accelerate launch ARGS``, usable where torchvision's
compiled ops do not load (see :mod:`vtok.compat`), which otherwise breaks the launcher itself.

Example: ``python -m vtok.launch --num_processes 8 -m vtok.cli train CONFIG --out RUN``.
"""

import sys

from vtok.compat import ensure_torchvision


def main() -> None:
    ensure_torchvision()
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_command_parser().parse_args(sys.argv[1:])
    launch_command(args)


if __name__ == "__main__":
    main()
