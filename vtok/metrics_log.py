"""The metrics log of a run: append-only JSONL that survives torn lines and continues exactly on resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vtok.io import atomic_path, dumps_json


def _records(text: str) -> list[dict[str, Any]]:
    """Parsed JSONL records; a torn line (a write cut by power loss or a full disk) is dropped."""
    out = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append(record)
    return out


class MetricsLog:
    """Append-only JSONL metrics; on resume, lines past the resumed step (and any torn line) are
    dropped so the curve continues exactly where the checkpoint left it."""

    def __init__(self, path: Path, resume_step: int | None):
        self.path = path
        if resume_step is not None and path.is_file():
            kept = [r for r in _records(path.read_text(errors="replace")) if r["step"] <= resume_step]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(f"{dumps_json(r)}\n" for r in kept))
        elif resume_step is None and path.exists():
            path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(dumps_json(record) + "\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``, without a torn last line."""
    return _records(Path(path).read_text(errors="replace"))
