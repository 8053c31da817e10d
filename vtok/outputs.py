"""Output paths, checked before any work starts: never an input, never a file of another kind, writable.

Every command that writes calls one of these first, so a mistyped ``--out`` fails
in one line before minutes of encoding or training, and nothing the user already
has is replaced by something else.

The ownership rule: vtok writes only into a folder it made for the same purpose
(marked by ``.vtok-out.json``, or recognised by its content: a run, a converted
model, shards) or into a new or empty one; never into or under a model, run or
shard folder it did not make for this command, nor inside an input. An existing
file is replaced only when vtok's own metadata says vtok wrote it (a token file's
format, a PNG text chunk on every image vtok saves).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from vtok.errors import VtokError, one_line
from vtok.tokens import TOKEN_FILE_FORMAT

MARKER = ".vtok-out.json"  # what a folder claimed by check_out_dir was made for: {"kind": ...}
PNG_KEY = "vtok"  # the PNG text chunk save_image writes into every image (the value: what it is)


def os_error_line(err: OSError) -> str:
    """An OSError (disk full, read-only, permission) as one line naming the path."""
    where = err.filename if err.filename is not None else "output"
    reason = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded"}.get(
        err.errno, err.strerror or str(err)
    )
    return one_line(f"cannot write {where}: {reason}")


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


def _config(path: Path) -> dict:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return {}
    return config if isinstance(config, dict) else {}


def is_model_folder(path: Path) -> bool:
    """True when ``path`` holds a vtok model (``config.json`` with a model entry)."""
    return "model" in _config(path)


def is_run_folder(path: Path) -> bool:
    """True when ``path`` is a training run (its ``config.json`` has a ``train`` section, or it has checkpoints)."""
    config = _config(path)
    return ("train" in config and "model" in config) or _owner(path) == "run folder"


def is_converted_model(path: Path) -> bool:
    """True when ``path`` is a model folder written by ``vtok convert`` (its config records the ``source``)."""
    config = _config(path)
    return "model" in config and isinstance(config.get("source"), dict) and "train" not in config


def is_shard_folder(path: Path) -> bool:
    """True when ``path`` holds token shards (``index.json`` written by ``vtok encode --shards``)."""
    try:
        return str(json.loads((path / "index.json").read_text()).get("format", "")).startswith("vtok.token-shards")
    except (OSError, ValueError, TypeError, AttributeError):
        return False


def is_vtok_image(path: Path, what: str | None = None) -> bool:
    """True when ``path`` is a PNG that vtok wrote (its text chunk says so; with ``what``: as that)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            written = (getattr(im, "text", None) or {}).get(PNG_KEY)
            return written is not None and (what is None or written == what)
    except Exception:  # any unreadable file is, for this purpose, "not vtok's image"
        return False


def _owner(path: Path) -> str | None:
    try:
        kind = json.loads((path / MARKER).read_text()).get("kind")
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


# Kinds recognised by their content too (folders written before the marker, or replaced whole by atomic_dir).
RECOGNISED: dict[str, Callable[[Path], bool]] = {
    "run folder": is_run_folder,
    "vtok model folder": is_converted_model,
    "shard folder": is_shard_folder,
}


def describe(path: Path) -> str:
    """What an existing folder is, in a few words, for a refusal."""
    if is_run_folder(path):
        return "a vtok training run"
    if is_model_folder(path):
        return "a vtok model folder"
    if is_shard_folder(path):
        return "a vtok shard folder"
    owner = _owner(path)
    return f"a folder vtok made for {owner}" if owner else "a folder vtok did not make"


def _check_not_under_vtok_folder(path: Path, kind: str) -> None:
    """Refuse a path inside a model, run or shard folder (the folder itself is judged by the caller)."""
    try:
        parents = list(path.resolve().parents)[:12]  # deep enough for RUN/final/x, cheap for /
    except OSError:
        return
    for folder in parents:
        config = _config(folder)
        if ("model" in config and "format_version" in config) or is_run_folder(folder) or is_shard_folder(folder):
            raise VtokError(f"--out {path} is inside {folder}, {describe(folder)}; write the {kind} elsewhere")


def _claim(folder: Path, kind: str) -> None:
    """Mark a new or empty folder as made by vtok for ``kind``, so a later run of the same command may reuse it."""
    if not any(folder.iterdir()):
        (folder / MARKER).write_text(json.dumps({"kind": kind}) + "\n")


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
    from vtok.images import IMAGE_EXTENSIONS

    path = Path(path)
    if path.is_dir():
        raise VtokError(f"--out {path} is a folder; give the {kind} a file name")
    for source in inputs:
        source = Path(source)
        if _same(path, source):
            raise VtokError(f"--out {path} is one of the inputs; write the {kind} elsewhere")
        if source.is_dir() and _inside(path, source):
            raise VtokError(f"--out {path} is inside the input {source}; write the {kind} elsewhere")
    if path.exists() and not (replaceable is not None and replaceable(path)):
        raise VtokError(f"--out {path} exists and is not a {kind} vtok wrote; remove it or choose another name")
    if kind != "sample grid" and path.suffix.lower() in IMAGE_EXTENSIONS:
        raise VtokError(f"--out {path} is named like an image ({path.suffix}); name the {kind} .safetensors")
    _check_not_under_vtok_folder(path, kind)
    check_writable(path.parent if str(path.parent) else Path("."))
    return path


def check_out_dir(
    path: str | Path,
    inputs: Iterable[str | Path] = (),
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "folder",
) -> Path:
    """Check an output folder before the work (the ownership rule of this module) and claim it.

    Args:
        path: the folder the command will write into.
        inputs: the command's inputs; the folder may be none of them nor inside an input folder.
        replaceable: an existing non-empty folder is also accepted where this says it is a ``kind``
            (besides a folder marked for ``kind`` or recognised by :data:`RECOGNISED`).
        kind: what the folder holds; the marker and the message name it.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise VtokError(f"--out {path} is a file, not a folder for the {kind}")
    for source in inputs:
        source = Path(source)
        if _same(path, source) or (source.is_dir() and _inside(path, source)):
            raise VtokError(f"--out {path} is inside the input {source}; write the {kind} elsewhere")
    _check_not_under_vtok_folder(path, kind)
    if path.is_dir() and any(path.iterdir()):
        ours = _owner(path) == kind or RECOGNISED.get(kind, lambda p: False)(path)
        if not (ours or (replaceable is not None and replaceable(path))):
            raise VtokError(
                f"--out {path} is a non-empty folder that is not a {kind} ({describe(path)}); "
                "give a new or empty folder"
            )
    check_writable(path)
    try:
        _claim(path, kind)
    except OSError as err:
        raise VtokError(os_error_line(err)) from None
    return path


def run_lock(folder: str | Path) -> contextlib.AbstractContextManager[None]:
    """Hold ``folder/.vtok-lock`` for a training run's life: a second run on the same folder is refused.

    The lock is an ``flock`` on the file, so the kernel drops it when the process dies: a lock
    left by a killed run (its pid dead) is taken over. Only the main process (``RANK`` 0) locks;
    the other ranks of one launch write into the same folder by design.
    """
    return _RunLock(Path(folder))


class _RunLock(contextlib.AbstractContextManager):
    def __init__(self, folder: Path):
        self.path = folder / ".vtok-lock"
        self.fd: int | None = None

    def __enter__(self) -> None:
        if os.environ.get("RANK", "0") != "0":
            return None
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise VtokError(os_error_line(err)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise VtokError(
                f"{self.path.parent} is in use by another vtok train (pid {holder}); "
                "wait for it to finish or give another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return None

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock; the file stays (removing it would race a waiting run)
            self.fd = None
