"""Arguments shared by several commands, each declared once, and the parser's error contract.

A command module adds its own flags and calls these for the shared ones, so a flag
means the same (name, type, default, help) wherever it appears.
"""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from vtok.config import NON_NEGATIVE, Range, number_arg
from vtok.errors import VtokError

# Every integer that enters on the command line is bounded here, so no value reaches torch or numpy as an
# overflow ("Overflow when unpacking long long"): counts, ids and labels fit an int32, seeds an int64.
INT32 = 2**31 - 1
COUNT = number_arg(int, Range(1, INT32))
SAMPLES = number_arg(int, Range(1, 1_000_000))  # images generated in one call (all are held in memory)
SEED = number_arg(int, Range(0, 2**63 - 1))
ID = Range(0, INT32)  # class ids and labels


class Parser(argparse.ArgumentParser):
    """argparse with vtok's error contract: one ``vtok: error:`` line and exit status 2.

    Dotted overrides (``key=value``) may come before or after the options (``train C --overlay O
    train.steps=2``): words argparse leaves over that look like overrides join ``overrides``.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"vtok: error: {self.prog}: {message}\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        namespace, extra = super().parse_known_args(args, namespace)
        if extra and isinstance(getattr(namespace, "overrides", None), list):
            late = [e for e in extra if "=" in e and not e.startswith("-")]
            namespace.overrides.extend(late)
            extra = [e for e in extra if e not in late]
        return namespace, extra


def add_tokenizer(p: argparse.ArgumentParser, required: bool = True) -> None:
    """``--tokenizer``: a saved tokenizer, by folder or Hub id."""
    p.add_argument(
        "--tokenizer",
        required=required,
        default=None,
        help="a saved tokenizer: folder (config.json + model.safetensors) or Hub id org/name[@revision]",
    )


def add_out(p: argparse.ArgumentParser, help: str, default: str | None = None) -> None:
    """``--out``: where the command writes (required unless a ``default`` is given)."""
    p.add_argument("--out", required=default is None, default=default, help=help)


def add_inputs(p: argparse.ArgumentParser) -> None:
    """The positional image inputs."""
    p.add_argument("inputs", nargs="+", help="image files or folders")


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The positional dotted config overrides (``key=value``)."""
    p.add_argument("overrides", nargs="*", help=help)


def add_batch(p: argparse.ArgumentParser) -> None:
    """``--batch-size``."""
    p.add_argument("--batch-size", type=COUNT, default=16)


def add_workers(p: argparse.ArgumentParser) -> None:
    """``--workers``: DataLoader processes decoding, resizing and cropping the images."""
    from vtok.streaming import MAX_DEFAULT_WORKERS, default_workers

    p.add_argument(
        "--workers",
        type=number_arg(int, NON_NEGATIVE),
        default=default_workers(),
        help=f"processes decoding images while the model runs; 0: in the main process "
        f"(default: the CPU count, at most {MAX_DEFAULT_WORKERS})",
    )


def add_device(p: argparse.ArgumentParser) -> None:
    """``--device``: the torch device the work runs on."""
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda or cuda:1 (default: cpu)")


def add_speed(p: argparse.ArgumentParser) -> None:
    """The speed flags read by :func:`load_fast`: ``--device``, ``--precision``, ``--compile``, ``--channels-last``."""
    from vtok.fast import PRECISIONS

    add_device(p)
    p.add_argument(
        "--precision", default="fp32", choices=list(PRECISIONS), help="bf16: autocast (quantization stays fp32)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (static shapes)")
    p.add_argument("--channels-last", action="store_true", help="CNN weights and inputs in NHWC (faster on GPUs)")


def add_size(p: argparse.ArgumentParser) -> None:
    """``--size``: resize and center-crop the inputs."""
    from vtok.data import IMAGE_SIZE

    p.add_argument(
        "--size", type=number_arg(int, IMAGE_SIZE), default=None, help="resize and center-crop to SIZE (ADM)"
    )


def load_fast(path: str, args: argparse.Namespace) -> Any:
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
    if device.type == "meta":  # tensors without data: every result would be a traceback later
        raise VtokError(f"--device {args.device} holds no data; give cpu, cuda or mps")
    model = vtok.load(path).to(device).eval()
    if path == getattr(args, "tokenizer", None):
        require_tokenizer(model, path)
    if isinstance(model, vtok.Tokenizer):
        accelerate(model, compile=args.compile, channels_last=args.channels_last)
    return model


def require_tokenizer(model: Any, path: str) -> Any:
    """``model`` if it is a tokenizer; one line otherwise (an AR model given as ``--tokenizer``)."""
    import vtok

    if not isinstance(model, vtok.Tokenizer):
        raise VtokError(f"--tokenizer {path} holds {type(model).__name__}, not a tokenizer")
    return model


def int_list(text: str, flag: str, valid: Range = ID) -> list[int]:
    """'1,207,360' -> [1, 207, 360], each in ``valid`` (default: ids and labels, 0 to 2**31 - 1);
    a one-line error naming the flag otherwise."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise VtokError(f"{flag} takes comma-separated integers, got {text!r}") from None
    for value in values:
        problem = (
            valid.problem(value) if abs(value) < 2**64 else f"must be {valid}, got a {len(str(value))}-digit number"
        )
        if problem:
            raise VtokError(f"{flag}: {problem}")
    return values


def distinct_names(names: list[str]) -> list[str]:
    """Each input's base name, or its path as given where two inputs share a base name (a row each)."""
    from collections import Counter
    from pathlib import Path

    counts = Counter(Path(n).name for n in names)
    out = [Path(n).name if counts[Path(n).name] == 1 else n for n in names]
    seen: Counter = Counter()
    for i, key in enumerate(out):  # the same file given twice: number the repeats
        seen[key] += 1
        if seen[key] > 1:
            out[i] = f"{key} ({seen[key]})"
    return out


def table(rows: dict[str, object]) -> str:
    """Rows as an aligned two-column text table, floats to 4 decimals."""
    width = max(len(k) for k in rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"  {k:<{width}}  {fmt(v)}" for k, v in rows.items())
