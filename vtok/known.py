"""Released checkpoints that ``vtok convert`` loads: their files' sha256 and the figures their authors published.

The table is ``vtok/known_checkpoints.yaml``, shipped in the package and read with
``yaml.safe_load``. Each entry names its source (repository and file), the released
file's sha256 where one was found (and where it was read) or ``null`` with the note
"hash not recorded", and each published figure with the protocol it was measured under
and where it is printed (a README table or a paper table). A converted model records
its source file's sha256 (``model.source["sha256"]``); :func:`find_known` matches it, and
``vtok eval`` writes the published figure beside the measured one
(:func:`published_rows`), saying whether the two protocols agree.

:func:`extra_known` adds entries for the length of a ``with`` block (one's own releases,
or a test's synthetic entry) without touching the shipped table.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml

from vtok.errors import VtokError

TABLE = "known_checkpoints.yaml"
NOT_RECORDED = "hash not recorded"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Published metric name -> (vtok metric, its column in EvalResult.scores).
COLUMNS = {
    "rFID": ("rfid", "rFID"),
    "PSNR": ("psnr", "PSNR"),
    "SSIM": ("ssim", "SSIM"),
    "LPIPS": ("lpips", "LPIPS_alex"),
}


@dataclass(frozen=True)
class PublishedFigure:
    """One published number and the protocol behind it.

    Attributes:
        metric: a key of :data:`COLUMNS` (rFID, PSNR, SSIM, LPIPS).
        value: the number as printed.
        resolution: the image side it was measured at.
        images: how many images (50000: ImageNet val); None where the source does not say.
        data: the image set, e.g. "ImageNet-1k val".
        protocol: crop, reference statistics and feature network, as far as the source states them.
        cite: where the number is printed (README table or paper table).
    """

    metric: str
    value: float
    resolution: int
    images: int | None
    data: str
    protocol: str
    cite: str


@dataclass(frozen=True)
class KnownCheckpoint:
    """A released checkpoint (see the module docstring)."""

    name: str
    source: str  # the ``vtok convert --from`` name
    repo: str
    file: str
    sha256: str | None
    sha256_from: str  # where the hash was read, or "hash not recorded"
    published: tuple[PublishedFigure, ...]
    note: str = ""


def _entry(raw: Any, where: str) -> KnownCheckpoint:
    """One YAML entry, checked: a bad table is a packaging bug, named by entry."""
    if not isinstance(raw, dict):
        raise VtokError(f"{where}: an entry must be a mapping")
    name = raw.get("name", "?")
    for key in ("name", "source", "repo", "file", "sha256_from"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise VtokError(f"{where}: entry {name!r} needs a '{key}' string")
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
        raise VtokError(f"{where}: entry {name!r} has a sha256 that is not 64 lowercase hex digits")
    if sha is None and raw["sha256_from"] != NOT_RECORDED:
        raise VtokError(f"{where}: entry {name!r} has no sha256, so its sha256_from must say {NOT_RECORDED!r}")
    figures = []
    for fig in raw.get("published") or []:
        try:
            figure = PublishedFigure(**fig)
        except TypeError as err:
            raise VtokError(f"{where}: entry {name!r}: a published figure is malformed ({err})") from None
        if figure.metric not in COLUMNS:
            raise VtokError(f"{where}: entry {name!r}: unknown metric {figure.metric!r}; one of {', '.join(COLUMNS)}")
        if not figure.cite.strip():
            raise VtokError(f"{where}: entry {name!r}: figure {figure.metric} cites no source")
        figures.append(figure)
    fields = {k: raw[k] for k in ("name", "source", "repo", "file", "sha256_from")}
    return KnownCheckpoint(**fields, sha256=sha, published=tuple(figures), note=raw.get("note", ""))


@functools.lru_cache(maxsize=1)
def _shipped() -> tuple[KnownCheckpoint, ...]:
    text = resources.files("vtok").joinpath(TABLE).read_text(encoding="utf-8")
    raw = yaml.safe_load(text) or {}
    return tuple(_entry(e, f"vtok/{TABLE}") for e in raw.get("checkpoints", []))


_extra: list[KnownCheckpoint] = []


def known_checkpoints() -> tuple[KnownCheckpoint, ...]:
    """The shipped entries, then any added by :func:`extra_known`."""
    return (*_shipped(), *_extra)


def find_known(sha256: str | None) -> KnownCheckpoint | None:
    """The entry whose released file has this sha256 (None for None or no match)."""
    if not sha256:
        return None
    return next((e for e in known_checkpoints() if e.sha256 == sha256.lower()), None)


def model_sha256(model: Any) -> str | None:
    """The sha256 of the file a converted model came from (``model.source["sha256"]``), if it records one."""
    source = getattr(model, "source", None)
    return source.get("sha256") if isinstance(source, dict) else None


@contextmanager
def extra_known(*entries: dict[str, Any] | KnownCheckpoint) -> Iterator[None]:
    """While open, ``entries`` (YAML-shaped dicts or :class:`KnownCheckpoint`) are known too."""
    added = [e if isinstance(e, KnownCheckpoint) else _entry(e, "extra_known") for e in entries]
    _extra.extend(added)
    try:
        yield
    finally:
        for e in added:
            _extra.remove(e)


def published_resolution(entry: KnownCheckpoint | None) -> int | None:
    """The resolution of an entry's figures when they agree on one (a model's published resolution)."""
    sides = {f.resolution for f in entry.published} if entry is not None else set()
    return sides.pop() if len(sides) == 1 else None


def published_rows(
    entry: KnownCheckpoint, scores: dict[str, dict[str, Any]], resolution: int, pinned: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """Each published figure beside the measured one: metric, measured, published, comparable, protocol, cite.

    ``comparable`` is "yes" only when the run followed the ``imagenet-val`` protocol at the
    figure's resolution over the figure's image count; otherwise it says what differs. A
    figure whose metric did not run is listed with ``measured`` None.
    """
    rows = []
    for fig in entry.published:
        metric, column = COLUMNS[fig.metric]
        measured = scores.get(metric, {}).get(column)
        differs = []
        if not pinned or pinned.get("name") != "imagenet-val" or "ImageNet" not in fig.data:
            differs.append(f"the run is not --protocol imagenet-val (the figure is on {fig.data})")
        if resolution != fig.resolution:
            differs.append(f"resolution {resolution} vs {fig.resolution}")
        if pinned and fig.images is not None and pinned.get("images") != fig.images:
            differs.append(f"{pinned.get('images')} images vs {fig.images}")
        if fig.metric == "LPIPS" and "alex" not in fig.protocol.lower():
            differs.append("the figure's LPIPS network is not stated (vtok's: AlexNet)")
        rows.append(
            {
                "metric": fig.metric,
                "measured": measured,
                "published": fig.value,
                "comparable": "yes" if not differs else "no: " + "; ".join(differs),
                "published_protocol": f"{fig.data}, {fig.resolution}px, "
                f"{fig.images if fig.images is not None else 'unstated'} images; {fig.protocol}",
                "cite": fig.cite,
            }
        )
    return rows


def markdown_table(entries: tuple[KnownCheckpoint, ...] | None = None) -> str:
    """The known releases as a markdown table (the docs page holds exactly this, checked by a test)."""
    rows = [
        "| release | `--from` | source | sha256 | published (resolution, images) | cited from |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries if entries is not None else _shipped():
        sha = f"`{e.sha256}` ({e.sha256_from})" if e.sha256 else NOT_RECORDED
        figures = "; ".join(
            f"{f.metric} {f.value:g} ({f.resolution} px, {f.images if f.images is not None else 'count not stated'})"
            for f in e.published
        )
        cites = "; ".join(dict.fromkeys(f.cite for f in e.published))
        cites = f"{cites}. {e.note}" if cites and e.note else cites or e.note or "none published"
        cells = [e.name, f"`{e.source}`", f"{e.repo} `{e.file}`", sha, figures or "none recorded", cites]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows) + "\n"
