"""Atomic file and folder writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import numbers
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the mode a plain open() would (0666 minus the umask).
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as err:
        if err.filename is None or str(err.filename) == str(tmp_path):  # name the file the user asked for
            raise OSError(err.errno, err.strerror, str(path)) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place.

    An existing folder at ``path`` is moved aside first and deleted only once the
    new one is in place, so at every moment one complete version exists.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in tmp.iterdir():
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def finite(value: Any) -> Any:
    """``value`` with every non-finite float (nan, inf) replaced by None, through dicts and lists."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):  # numpy floats too
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def dumps_json(value: Any, **kwargs: Any) -> str:
    """Strict JSON (RFC 8259): no NaN or Infinity tokens, which strict parsers reject; they become null."""
    return json.dumps(finite(value), allow_nan=False, **kwargs)


def _as_os_error(err: Exception, path: str | Path) -> OSError:
    """A library's write failure as the OSError it wraps: safetensors and torch report ENOSPC in their own types.

    Where the message carries no error code (torch's ``unexpected pos`` from its zip writer: a short
    write), a full disk is told by the free space left, else it is an I/O error.
    """
    text = str(err)
    code = re.search(r"(?:code:|errno) ?(\d+)", text)
    number = int(code.group(1)) if code else (errno.ENOSPC if _nearly_full(Path(path).parent) else errno.EIO)
    return OSError(number, os.strerror(number), str(path))


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 16 << 20
    except OSError:
        return False


# torch.save's own write failures: its zip writer reports a short write as "unexpected pos" (inline_container.cc).
_TORCH_WRITE_ERRORS = ("writ", "unexpected pos", "inline_container", "file_size", "no space")


def write_safetensors(tensors: dict[str, Any], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """``safetensors.torch.save_file`` whose disk errors (full, read-only) surface as ``OSError``."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as err:
        raise _as_os_error(err, path) from None


def write_torch(obj: Any, path: str | Path) -> None:
    """``torch.save`` of plain state (optimizer, RNG) whose disk errors surface as ``OSError``."""
    import torch

    try:
        torch.save(obj, path)
    except RuntimeError as err:
        if not any(words in str(err).lower() for words in _TORCH_WRITE_ERRORS):
            raise
        raise _as_os_error(err, path) from None


def check_regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file; else one line: not found, or a device, FIFO or socket (never read)."""
    from vtok.errors import VtokError

    path = Path(path)
    if path.is_file():
        return path
    if path.exists() or path.is_symlink():
        kind = "a folder" if path.is_dir() else "not a regular file (a device, FIFO or socket?)"
        raise VtokError(f"{what} {path} is {kind}")
    raise VtokError(f"{what} not found: {path}")


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, read in 1 MB blocks (released checkpoints are GBs)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
