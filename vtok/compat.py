"""Make ``import torchvision`` (and timm, lpips) work next to a CPU-only torch.

Some machines pair a CPU build of torch with a torchvision wheel built for CUDA.
The wheel's compiled ops (``torchvision/_C*.so``) then fail to load, and
torchvision's import dies in ``_meta_registrations`` with
``operator torchvision::nms does not exist``, because it registers fake kernels
for ops whose schemas only the compiled library defines.

:func:`ensure_torchvision` loads the compiled library when it works (the normal
case: a no-op apart from loading it a little earlier than torchvision would) and
otherwise defines the schemas of the ops torchvision registers Python kernels
for. Those ops then exist but have no kernels: calling ``torchvision.ops.nms``
raises, while everything vtok uses from torchvision (model definitions, weights
loading, transforms) works.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

# Schemas as torchvision's C++ sources declare them (csrc/ops/*.cpp).
_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)

_state: dict[str, object] = {}


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
    except RuntimeError:
        return False
    return True


def ensure_torchvision() -> str:
    """Prepare torchvision's op namespace before torchvision is imported.

    Returns:
        ``"native"`` when torchvision's compiled ops are usable, ``"schemas"`` when
        vtok defined the missing schemas, ``"absent"`` when torchvision is not
        installed. Safe to call any number of times.
    """
    if "mode" in _state:
        return str(_state["mode"])
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        mode = "absent"
    elif "torchvision" in sys.modules or _op_exists("nms"):
        mode = "native"
    else:
        mode = "schemas"
        for lib_path in sorted(Path(spec.origin).parent.glob("_C*.so")):
            try:
                torch.ops.load_library(str(lib_path))
            except (OSError, RuntimeError):
                continue
            if _op_exists("nms"):
                mode = "native"
                break
        if mode == "schemas":
            lib = torch.library.Library("torchvision", "FRAGMENT")  # noqa: TOR901
            for schema in _SCHEMAS:
                if not _op_exists(schema.split("(")[0]):
                    lib.define(schema)
            _state["lib"] = lib  # the definitions live as long as this object
    _state["mode"] = mode
    return mode
