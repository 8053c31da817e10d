"""Output paths, checked before any work starts: never an input, never a file of another kind, writable.

Every command that writes calls one of these first, so a mistyped ``--out`` fails
in one line before minutes of encoding or training, and nothing the user already
has is replaced by something else.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from vtok.errors import VtokError
from vtok.tokens import TOKEN_FILE_FORMAT


def os_error_line(err: OSError) -> str:
    """An OSError (disk full, read-only, permission) as one line naming the path."""
    where = err.filename if err.filename is not None else "output"
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}.get(
        err.errno, err.strerror or str(err)
    )
    return f"cannot write {where}: {reason}"


def check_writable(folder: Path) -> None:
    """Create ``folder`` (and parents) if needed and prove it writable by creating a file in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".vtok-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except FileExistsError:
        raise VtokError(f"cannot write into {folder}: a file of that name is in the way") from None
    except OSError as err:
        raise VtokError(os_error_line(err)) from None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def is_token_file(path: Path) -> bool:
    """True when ``path`` is a safetensors file that vtok wrote as tokens."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return (f.metadata() or {}).get("format") == TOKEN_FILE_FORMAT
    except Exception:  # any unreadable file is, for this purpose, "not a token file"
        return False


def is_model_folder(path: Path) -> bool:
    """True when ``path`` holds a vtok model (``config.json`` with a model entry)."""
    try:
        return "model" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def check_out_file(
    path: str | Path,
    inputs: Iterable[str | Path] = (),
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "file",
) -> Path:
    """Check an output file before the work: not a folder, not an input, not a file of another kind.

    Args:
        path: the file the command will write.
        inputs: the command's inputs (files or folders); ``path`` may be none of them.
        replaceable: an existing file is overwritten only if this says it is vtok output of the same kind.
        kind: what the command writes, for the message ("token file").
    """
    path = Path(path)
    if path.is_dir():
        raise VtokError(f"--out {path} is a folder; give the {kind} a file name")
    for source in inputs:
        if _same(path, Path(source)):
            raise VtokError(f"--out {path} is one of the inputs; write the {kind} elsewhere")
    if path.exists() and not (replaceable is not None and replaceable(path)):
        raise VtokError(f"--out {path} exists and is not a {kind} vtok wrote; remove it or choose another name")
    check_writable(path.parent if str(path.parent) else Path("."))
    return path


def check_out_dir(
    path: str | Path,
    inputs: Iterable[str | Path] = (),
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "folder",
) -> Path:
    """Check an output folder before the work: not a file, not an input, writable.

    Args:
        path: the folder the command will write into.
        inputs: the command's inputs; the folder may be none of them nor inside an input folder.
        replaceable: for commands that replace the whole folder (a model folder), an existing non-empty
            folder must satisfy this; None: files are added to the folder.
        kind: what the folder holds, for the message.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VtokError(f"--out {path} is a file, not a folder for the {kind}")
    for source in inputs:
        source = Path(source)
        if _same(path, source) or (source.is_dir() and _inside(path, source)):
            raise VtokError(f"--out {path} is inside the input {source}; write the {kind} elsewhere")
    if replaceable is not None and path.is_dir() and any(path.iterdir()) and not replaceable(path):
        raise VtokError(f"--out {path} is a non-empty folder that is not a {kind}; choose another")
    check_writable(path)
    return path
