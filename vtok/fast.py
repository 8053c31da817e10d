"""Inference fast paths: bf16 autocast, ``torch.compile`` and channels_last, each a switch.

- ``precision="bf16"`` runs encoders, decoders and the GPT under ``torch.autocast``.
  Quantization stays float32: the :class:`vtok.interfaces.Quantizer` base runs every part's
  search inside :func:`full_precision` on float32 latents, so bf16 moves an id only where a latent lies almost halfway
  between two codes (``tests/test_fast.py`` bounds the share of such ids and the
  pixel error against float32).
- ``compile=True`` compiles the encoder and decoder modules in place with static shapes
  (``nn.Module.compile`` keeps parameter names, so a compiled model saves as before);
  the GPT's cached decoding step is compiled on its own (:class:`vtok.ar_models.sample.DecodeStep`).
- ``channels_last=True`` stores the CNNs' weights and inputs in NHWC, the layout the
  GPU convolution kernels prefer.

Not in PyTorch as one call: autocast, compilation and memory format are separate
switches there, and a tokenizer's quantizer must be kept out of the first.
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from vtok.errors import VtokError

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


def check_precision(precision: str) -> torch.dtype:
    """The dtype of a precision name; a one-line error for anything else."""
    if precision not in PRECISIONS:
        raise VtokError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision]


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for bf16; a no-op context for fp32."""
    dtype = check_precision(precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off for ``device``'s type: inside, operations run in their inputs' dtype.

    For the regions that must stay float32 under mixed precision (quantization, loss sums):
    the caller casts its inputs with ``.float()``; autocast would otherwise cast matmuls and
    convolutions back down to bf16 however the inputs arrive.
    """
    return torch.autocast(device_type=torch.device(device).type, enabled=False)


@functools.cache
def compile_problem() -> str | None:
    """Why ``torch.compile`` cannot run on this machine, in one line, or None when it can.

    Compiling on the CPU needs a working C++ toolchain, which fails only when first used, deep inside
    a traceback, so a tiny function is compiled once on the CPU to find out (a GPU's Triton is not probed).
    """
    try:
        fn = torch.compile(lambda x: torch.sin(x) * 2 + 1, dynamic=False)
        fn(torch.ones(4))
    except Exception as err:  # noqa: BLE001 - any failure means the same to the user: no compile here
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"torch.compile is unavailable here ({first[:160]}); run without --compile"
    return None


def require_compile() -> None:
    problem = compile_problem()
    if problem is not None:
        raise VtokError(problem)


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.ndim == 4 else a for a in args
    )


def has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def accelerate(model: nn.Module, compile: bool = False, channels_last: bool = False) -> nn.Module:
    """In place: a tokenizer's ``encoder`` and ``decoder`` (or any model's own forward) compiled and/or in NHWC.

    Args:
        model: a :class:`vtok.Tokenizer` (its encoder and decoder are sped up, the quantizer is left alone)
            or any module.
        compile: ``nn.Module.compile(dynamic=False)``: one graph per input shape.
        channels_last: weights and 4-D inputs of modules with convolutions in channels_last.
    Returns:
        ``model`` itself.
    """
    if compile:
        require_compile()
    parts = [
        getattr(model, name) for name in ("encoder", "decoder") if isinstance(getattr(model, name, None), nn.Module)
    ]
    for part in parts or [model]:
        if channels_last and has_conv(part):
            part.to(memory_format=torch.channels_last)
            part.register_forward_pre_hook(_to_channels_last)
        if compile:
            part.compile(dynamic=False)
    return model
