"""Pickled checkpoints read without running them: tensors and plain containers rebuilt, any other global inert.

``torch.load(weights_only=True)`` refuses a whole file for one pickled class it does
not know, and released checkpoints carry such classes beside their weights: Lightning
1.x files key their ``callbacks`` entry by the ``ModelCheckpoint`` class, training
scripts save their argument objects. PyTorch has no loader that keeps the tensors and
skips the rest, so this one is written here: an ``Unpickler`` whose ``find_class``
returns the real object only for tensor rebuilding and plain containers, and for
any other name an :class:`Inert` placeholder class. A placeholder is never a callable
from the file: "calling" it (pickle's REDUCE) builds another placeholder holding the
arguments, so a payload whose ``__reduce__`` names ``os.system`` stores a string and
runs nothing.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

# (module, name) pairs rebuilt for real: tensor reconstruction and plain data, nothing that touches the system.
_REAL = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch", "Size"),
    ("torch", "device"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how protocol-2 pickles spell bytes
}


class Inert:
    """A global named by the file and never called: holds the arguments and state the file gave it."""

    source = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state, self.items = args, kwargs, None, []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:  # a list subclass being rebuilt
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:  # a dict subclass being rebuilt
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<inert {self.source}>"


def _placeholder(module: str, name: str) -> type:
    return type(f"Inert_{name}", (Inert,), {"source": f"{module}.{name}"})


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds tensors, dtypes and containers; any other global becomes an :class:`Inert` class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inert: set[str] = set()

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _REAL:
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch.storage" and name == "_load_from_bytes":
            return _storage_from_bytes  # torch's own calls an unrestricted torch.load
        self.inert.add(f"{module}.{name}")
        return _placeholder(module, name)


def _storage_from_bytes(data: bytes) -> Any:
    return load_restricted(io.BytesIO(data))[0]


def load_restricted(file: str | Path | io.BytesIO) -> tuple[Any, list[str]]:
    """Read a torch checkpoint (zip or legacy) or a raw pickle without executing it.

    Returns:
        The object, with every non-tensor global replaced by an :class:`Inert`
        placeholder, and the sorted names of the globals that were made inert.
    """
    seen: set[str] = set()

    class Tracking(RestrictedUnpickler):
        def load(self) -> Any:
            try:
                return super().load()
            finally:
                seen.update(self.inert)

    class PickleModule:  # what torch.load takes as ``pickle_module``: its Unpickler and load
        Unpickler = Tracking

        @staticmethod
        def load(f: Any, **kwargs: Any) -> Any:
            return Tracking(f, **kwargs).load()

    try:
        obj = torch.load(file, map_location="cpu", weights_only=False, pickle_module=PickleModule)
    except (RuntimeError, pickle.UnpicklingError, ValueError) as err:
        if "magic number" not in str(err).lower() and "invalid load key" not in str(err).lower():
            raise
        # Not a torch file: a raw pickle (e.g. a dict of tensors pickled directly).
        if isinstance(file, io.BytesIO):
            file.seek(0)
            obj = PickleModule.load(file)
        else:
            with open(file, "rb") as f:
                obj = PickleModule.load(f)
    return obj, sorted(seen)
