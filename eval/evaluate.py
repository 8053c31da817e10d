"""``vtok eval``: every requested metric of one tokenizer (or folder of reconstructions) on one data set.

Image metrics (rfid, psnr, ssim, lpips, fd_effnet_lite0) stream over batches of
(original, reconstruction) pairs; ``codebook`` reads the tokens; ``text`` and
``face`` follow TokBench's protocol on a TokBench-layout folder, or on the built-in
detail set when the data is ``builtin``. A metric whose backend or weights are
missing is skipped and the reason written in the report; bad input stops with one
line.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from vtok.builtin import builtin_crops
from vtok.config import build_component
from vtok.data import list_images
from vtok.errors import VtokError
from vtok.eval.codebook import CodebookStats
from vtok.eval.metric import MetricUnavailable, merge_running, running_state
from vtok.eval.protocols import PinnedRun
from vtok.eval.tokbench import Reconstruct, check_layout, run_tokbench
from vtok.images import center_crop_arr, load_image, pil_to_tensor
from vtok.interfaces import Tokenizer
from vtok.pipeline import device_of, reconstruct_with
from vtok.ranks import Ranks, batch_block
from vtok.registry import lookup
from vtok.streaming import ImageFiles, file_batches, stream_images, to_device, warn_skipped

IMAGE_METRICS = ("rfid", "psnr", "ssim", "lpips", "fd_effnet_lite0")
DETAIL_METRICS = ("text", "face")
PAGE_METRICS = ("cer", "wer")  # whole-image OCR (VTBench's text preservation), vtok.eval.page_text
GENERATION_METRICS = {"gfid": "inception", "gfd_effnet_lite0": "effnet_lite0"}
ALL_METRICS = (*IMAGE_METRICS, "codebook", *DETAIL_METRICS, *PAGE_METRICS, *GENERATION_METRICS)


@dataclass
class EvalResult:
    """Scores (``{metric: {column: value}}``), protocols, skipped metrics with reasons, and report material."""

    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    grid: tuple[torch.Tensor, torch.Tensor] | None = None
    worst_text: list = field(default_factory=list)
    worst_faces: list = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    pinned: dict[str, Any] = field(default_factory=dict)  # a pinned protocol's choices (vtok.eval.protocols)
    published: dict[str, Any] = field(default_factory=dict)  # a known release's published figures (vtok.known)


def parse_metrics(spec: str | Sequence[str]) -> list[str]:
    names = [m.strip() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    unknown = [m for m in names if m not in ALL_METRICS]
    if unknown:
        raise VtokError(f"unknown metric {unknown[0]!r}; choose from {', '.join(ALL_METRICS)}")
    if not names:
        raise VtokError("no metrics requested")
    return names


def _image_items(data: str, size: int) -> list[tuple[str, Any]]:
    """(relative name, PIL image or path) of the image set, in a fixed order."""
    if data == "builtin":
        return [(f"{name}.png", image) for name, image in builtin_crops("heldout", size)]
    root = Path(data)
    if not root.exists():
        raise VtokError(f"data {root} does not exist")
    base = root / "images" if (root / "annotations").is_dir() else root
    files = list_images(base)
    if not files:
        raise VtokError(f"no images in {base}")
    return [(str(f.relative_to(base)) if base.is_dir() else f.name, f) for f in files]


class _ImagePairs(ImageFiles):
    """Originals and the reconstructions made elsewhere of the same files: (2, 3, S, S) per item.

    A reconstruction is either ``size`` x ``size`` or the original's size (then cropped
    alike); a missing one, like an unreadable original, stops the evaluation.
    """

    def __init__(self, items: list[tuple[str, Any]], size: int, recon_dir: Path):
        super().__init__([item for _, item in items], size, strict=True)
        self.names = [rel for rel, _ in items]
        self.recon_dir = recon_dir

    def load(self, index: int) -> torch.Tensor:
        item, size = self.items[index], self.size
        original = item if not isinstance(item, Path) else load_image(item)
        path = self.recon_dir / self.names[index]
        path = path if path.is_file() else path.with_suffix(".png")
        if not path.is_file():
            raise VtokError(f"no reconstruction for {self.names[index]} in {self.recon_dir}")
        recon = load_image(path)
        if recon.size == original.size:
            recon = center_crop_arr(recon, size)
        elif recon.size != (size, size):
            raise VtokError(f"{path} is {recon.size[0]}x{recon.size[1]}; expected {size}x{size} or its original's size")
        return torch.stack([pil_to_tensor(center_crop_arr(original, size)), pil_to_tensor(recon)])  # (2, 3, S, S)


def _pairs(items: list[tuple[str, Any]], block: range, run: _Run) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
    """Batches of (originals, reconstructions, tokens or None), (B, 3, S, S) in [-1, 1], of the items in ``block``.

    Images are decoded by ``run.workers`` DataLoader processes while the model runs.
    """
    if run.recon_dir is not None:
        dataset = _ImagePairs(items, run.resolution, run.recon_dir)
    else:  # a pinned protocol scores every one of its images: an unreadable one stops the run
        dataset = ImageFiles([item for _, item in items], run.resolution, strict=run.pinned is not None)
    device = device_of(run.tokenizer) if run.tokenizer is not None else torch.device("cpu")
    batches = file_batches(len(block), run.batch_size, block.start)
    loaded = stream_images(dataset, batches, run.workers, pin_memory=device.type == "cuda")
    skipped = []
    for batch in tqdm(loaded, total=len(batches), desc="images", disable=not run.progress or not run.ranks.main):
        skipped += batch.skipped
        if batch.images is None:
            continue
        tokens = None
        if run.recon_dir is not None:
            x, y = batch.images[:, 0], batch.images[:, 1]  # (B, 3, S, S) each
        else:
            x = batch.images  # (B, 3, S, S)
            with torch.inference_mode():
                if run.tokenizer is not None:
                    tokens = run.tokenizer.encode(to_device(x, device))
                    # the tokens are kept for codebook statistics
                    y = run.tokenizer.decode(tokens).float().clamp(-1, 1).cpu()
                else:
                    y = run.reconstruct(x)
        yield x, y, tokens
    warn_skipped(skipped, tqdm.write)


def _build_metric(name: str, device: str):
    """A registered metric, on ``device`` where it has a network."""
    fields = {f.name for f in dataclasses.fields(lookup("metric", name).Config)}
    return build_component("metric", {"name": name, **({"device": device} if "device" in fields else {})})


@dataclass
class _Run:
    """One evaluation's settings, shared by the three kinds of metric."""

    data: str
    resolution: int
    batch_size: int
    tokenizer: Tokenizer | None
    reconstruct: Reconstruct | None
    recon_dir: Path | None
    recognizer: str
    embedder: str
    detail_dir: str | Path | None
    reference: str | Path | None
    device: str
    progress: bool
    workers: int = 0
    ranks: Ranks = field(default_factory=Ranks)
    pinned: PinnedRun | None = None


def evaluate(
    metrics: Sequence[str],
    data: str = "builtin",
    tokenizer: Tokenizer | None = None,
    reconstruct: Reconstruct | None = None,
    recon_dir: str | Path | None = None,
    resolution: int = 256,
    batch_size: int = 16,
    recognizer: str = "rapidocr",
    embedder: str = "dlib",
    detail_dir: str | Path | None = None,
    reference: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    workers: int = 0,
    ranks: Ranks | None = None,
    fit: str | None = None,
    pinned: PinnedRun | None = None,
) -> EvalResult:
    """Run ``metrics`` for exactly one of ``tokenizer``, ``reconstruct`` or ``recon_dir``.

    Args:
        metrics: names from :data:`ALL_METRICS`.
        data: ``"builtin"`` or a folder (plain images, or TokBench layout for text/face).
        resolution: image side for image metrics, TokBench setting (256/512/1024) for text/face.
        detail_dir: where the built-in detail set is written when ``data`` is builtin.
        reference: ``gfid`` only: ADM ``.npz`` statistics or a folder of real images;
            the generated images are those in ``recon_dir``.
        workers: DataLoader processes decoding the images of the image metrics.
        ranks: under ``accelerate launch``, each rank scores a contiguous block of whole
            batches of the image metrics and rank 0 merges their running statistics;
            gFID and text/face run on rank 0. Only rank 0's result holds the scores.
        fit: how VTBench sets (``vtbench-*`` or a VTBench folder) and cer/wer feed images
            of any size to the tokenizer: crop, native, grid or tiles (default: the set's own).
        pinned: a protocol resolved for this run (:meth:`vtok.eval.protocols.Protocol.resolve`): its
            images, resolution and metrics replace ``data``, ``resolution`` and ``metrics``; its
            choices go into ``result.pinned`` and its rFID reference statistics into ``pinned.reference``.
    """
    if pinned is not None:
        metrics, data, resolution = pinned.metrics, pinned.data, pinned.resolution
    if sum(x is not None for x in (tokenizer, reconstruct, recon_dir)) != 1:
        raise VtokError(
            "evaluate needs exactly one of a tokenizer, a reconstruct function or a folder of reconstructions"
        )
    metrics = parse_metrics(metrics)
    recon_dir = Path(recon_dir) if recon_dir is not None else None
    if recon_dir is not None and not recon_dir.is_dir():
        raise VtokError(f"reconstruction folder {recon_dir} does not exist")
    run = _Run(
        data, resolution, batch_size, tokenizer, reconstruct, recon_dir, recognizer, embedder, detail_dir,
        reference, device, progress, workers, ranks or Ranks(), pinned,
    )  # fmt: skip
    result = EvalResult(info={"data": data, "resolution": resolution})
    started = time.perf_counter()
    from vtok.eval.vtbench import is_vtbench_data, run_vtbench

    if is_vtbench_data(data):
        # Images of any size and aspect, one at a time, fed as VTBench feeds them (vtok.eval.vtbench).
        if "codebook" in metrics:
            result.skipped["codebook"] = "codebook statistics run on the square image sets, not on VTBench's sets"
        if run.ranks.main:
            run_vtbench(result, [m for m in metrics if m in (*IMAGE_METRICS, *PAGE_METRICS)], run, fit, _build_metric)
        metrics = [m for m in metrics if m not in (*IMAGE_METRICS, *PAGE_METRICS, "codebook")]
    elif any(m in PAGE_METRICS for m in metrics) and run.ranks.main:
        run_vtbench(result, [m for m in metrics if m in PAGE_METRICS], run, fit, _build_metric)
    # The image metrics first: they are the part every rank shares, so no rank waits on rank 0's own work.
    _image_scores(result, [m for m in metrics if m in (*IMAGE_METRICS, "codebook")], run)
    if run.ranks.main:
        _generation_scores(result, [m for m in metrics if m in GENERATION_METRICS], run)
        _detail_scores(result, [m for m in metrics if m in DETAIL_METRICS], run)
    if pinned is not None and run.ranks.main:
        result.pinned = pinned.pins(result.info.get("images"), result.protocols.get("rfid"))
    _report_order(result)
    result.info["seconds"] = round(time.perf_counter() - started, 1)
    return result


def _report_order(result: EvalResult) -> None:
    """Generation, then image, then text/face scores, as the report lists them."""
    group = {**{m: 0 for m in GENERATION_METRICS}, **{m: 2 for m in (*DETAIL_METRICS, *PAGE_METRICS)}}
    for table in (result.scores, result.protocols, result.skipped):
        ordered = sorted(table.items(), key=lambda kv: group.get(kv[0], 1))
        table.clear()
        table.update(ordered)


def _generation_scores(result: EvalResult, names: list[str], run: _Run) -> None:
    """gFID-style distances of the generated images in ``recon_dir`` against the reference."""
    for name in names:
        if run.recon_dir is None or run.reference is None:
            raise VtokError(
                f"{name} needs the generated images (--recon DIR) and a reference (--reference .npz or folder)"
            )
        from vtok.eval.generation import generation_fid

        result.scores[name], result.protocols[name] = generation_fid(
            run.recon_dir, run.reference, run.resolution, run.batch_size, run.device, run.progress,
            GENERATION_METRICS[name],
        )  # fmt: skip


def _image_scores(result: EvalResult, names: list[str], run: _Run) -> None:
    """Streaming image metrics over (original, reconstruction) pairs, and codebook statistics of the tokens."""
    metrics = {}
    for name in [m for m in names if m in IMAGE_METRICS]:
        try:
            metrics[name] = _build_metric(name, run.device)
        except MetricUnavailable as err:
            result.skipped[name] = str(err)
    if "codebook" in names:
        if run.tokenizer is None:
            result.skipped["codebook"] = "codebook statistics need a tokenizer, not reconstructions"
        else:
            metrics["codebook"] = CodebookStats(run.tokenizer.codebook_sizes)
    if not metrics:
        return
    count = 0
    items = run.pinned.items if run.pinned is not None else _image_items(run.data, run.resolution)
    for x, y, tokens in _pairs(items, batch_block(len(items), run.batch_size, run.ranks), run):
        if result.grid is None:
            result.grid = (x[:8].clone(), y[:8].clone())
        for name, metric in metrics.items():
            if name == "codebook":
                metric.update(tokens)
            else:
                metric.update(x, y)
        count += len(x)
    states = run.ranks.gather((count, {name: running_state(metric) for name, metric in metrics.items()}))
    if not run.ranks.main:
        return
    for other_count, other in states[1:]:  # later ranks hold later images
        count += other_count
        for name, metric in metrics.items():
            merge_running(metric, [other[name]])
    if count == 0:
        raise VtokError(f"no readable images in {run.data}")
    result.info["images"] = count
    if run.pinned is not None and "rfid" in metrics:
        run.pinned.reference = metrics["rfid"].real  # the protocol's reference statistics, merged over ranks
    for name, metric in metrics.items():
        result.scores[name], result.protocols[name] = metric.compute(), metric.protocol()


def _detail_scores(result: EvalResult, names: list[str], run: _Run) -> None:
    """TokBench text and face fidelity on a TokBench folder or the built-in detail set."""
    if not names:
        return
    from vtok.eval.face import build_embedder
    from vtok.eval.text import build_recognizer

    if run.data == "builtin":
        from vtok.eval.detail_set import make_detail_set

        if run.detail_dir is None:
            raise VtokError("the built-in detail set needs a folder to be written to")
        root = make_detail_set(run.detail_dir, run.resolution)
        result.info["detail_set"] = f"vtok built-in detail set (seed 0, resolution {run.resolution}), written to {root}"
    else:
        root = check_layout(run.data)
        result.info["detail_set"] = str(root)
    backends = {}
    for name, build, choice in (("text", build_recognizer, run.recognizer), ("face", build_embedder, run.embedder)):
        if name in names:
            try:
                backends[name] = build(choice)
            except MetricUnavailable as err:
                result.skipped[name] = str(err)
    reconstruct = run.reconstruct if run.tokenizer is None else reconstruct_with(run.tokenizer)
    text, faces = run_tokbench(
        root, run.resolution, reconstruct, backends.get("text"), backends.get("face"), run.recon_dir, run.progress
    )
    if text is not None:
        result.scores["text"], result.protocols["text"] = text.compute(), text.protocol()
        result.worst_text = text.worst_pairs()
    if faces is not None:
        result.scores["face"], result.protocols["face"] = faces.compute(), faces.protocol()
        result.worst_faces = faces.worst_pairs()
