"""Memory a setting needs, estimated before the work and checked against what the machine has.

A size that cannot fit (a 1 x 1,000,000 strip resized to cover a 32-pixel crop, a
100,000-pixel training side, a 10**8-code codebook, 10**8 samples) is refused in one
line naming the setting and the amount, instead of allocating for half a minute and
ending in ``MemoryError``. The estimates are lower bounds of what the work holds at
once (a refusal is certain to be right; passing is no promise), and the available
amount is psutil's where it is installed, else the kernel's ``MemAvailable``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vtok.errors import VtokError

FLOAT = 4  # bytes of a float32


def available_bytes() -> int | None:
    """Memory the system can give without swapping (None where it cannot be told)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _device_bytes() -> int:
    """Free accelerator memory (a batch's activations live there when training on a GPU)."""
    try:
        import torch

        return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else 0
    except Exception:  # no CUDA build, a busy or broken driver: count the host alone
        return 0


def size_text(n: float) -> str:
    """Bytes as '3.2 GB' / '512 MB'."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 1e3:.0f} kB"


def check_memory(needed: float, what: str, hint: str = "", device: bool = False) -> None:
    """Refuse ``what`` in one line where ``needed`` bytes exceed the memory available now
    (``device``: host and accelerator together, for work that may run on either)."""
    available = available_bytes()
    if available is not None and device:
        available += _device_bytes()
    if available is not None and needed > available:
        advice = f"; {hint}" if hint else ""
        raise VtokError(
            f"{what} needs about {size_text(needed)} of memory, {size_text(available)} is available{advice}"
        )


def image_bytes(count: int, height: int, width: int | None = None) -> int:
    """A (count, 3, H, W) float32 batch plus its 8-bit pixels: what holding decoded images costs."""
    return count * 3 * height * (height if width is None else width) * (FLOAT + 1)


def generated_bytes(model: Any, tokenizer: Any, count: int) -> int:
    """``count`` samples of an AR model decoded by ``tokenizer``: ids, the images and their grid."""
    cfg = model.cfg
    positions = cfg.length or (cfg.grid[0] * cfg.grid[1] if cfg.grid else 1)
    side = int(positions**0.5) * int(getattr(tokenizer, "downsample_factor", 16))
    return count * positions * 8 + 2 * image_bytes(count, side)


def _codebooks(spec: Any) -> Iterator[tuple[int, int]]:
    """(codebook size, code dim) of every quantizer in a resolved model spec (dims default to 1)."""
    if isinstance(spec, dict):
        dim = next((spec[k] for k in ("codebook_dim", "dim", "embed_dim") if isinstance(spec.get(k), int)), 1)
        sizes = spec.get("codebook_sizes") if isinstance(spec.get("codebook_sizes"), list) else []
        if isinstance(spec.get("codebook_size"), int):
            sizes = [*sizes, spec["codebook_size"]]
        for size in sizes:
            if isinstance(size, int):
                yield size, dim
        for value in spec.values():
            yield from _codebooks(value)
    elif isinstance(spec, list):
        for value in spec:
            yield from _codebooks(value)


def training_bytes(cfg: dict[str, Any]) -> int:
    """A lower bound on a training step's memory: the batch (input, output, gradient), and per codebook its
    weights with gradient and Adam moments, and the distances of every position of the batch to every code
    (positions counted at a downsampling of 16)."""
    train, data = cfg.get("train", {}), cfg.get("data", {})
    batch, side = int(train.get("batch_size") or 1), int(data.get("image_size") or 1)
    positions = max(1, (side // 16) ** 2)
    total = 3 * image_bytes(batch, side)
    for size, dim in _codebooks(cfg.get("model")):
        total += size * max(dim, 1) * FLOAT * 4 + batch * positions * size * FLOAT
    return total


def check_training(cfg: dict[str, Any]) -> None:
    """Refuse a preset whose batch, image side or codebooks cannot fit, before any layer is built."""
    check_memory(
        training_bytes(cfg),
        f"training at train.batch_size={cfg['train'].get('batch_size')}, data.image_size={cfg['data'].get('image_size')}",
        "lower train.batch_size, data.image_size or the codebook size",
        device=True,
    )


MAX_ZIP_RATIO = 200  # deflate reaches ~1000x only on constant data; weights and statistics compress < 10x


def check_zip(path: Any) -> None:
    """Refuse a zip file (torch ``.pt``, numpy ``.npz``) whose members expand past a plausible ratio or past
    the memory available, from its directory alone: before a byte is inflated."""
    import zipfile
    from pathlib import Path

    path = Path(path)
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # the reader that follows names a damaged file
    expanded = sum(m.file_size for m in members)
    packed = sum(m.compress_size for m in members) or 1
    if expanded > 64 << 20 and expanded > MAX_ZIP_RATIO * packed:
        raise VtokError(
            f"{path} expands from {size_text(packed)} to {size_text(expanded)} ({expanded // packed}x): "
            "a zip bomb, not weights or statistics"
        )
    check_memory(expanded, f"reading {path}")
