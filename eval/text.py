"""Text fidelity (TokBench T-ACC / T-NED): recognise ground-truth word crops of originals and reconstructions.

Recognition only, no detection: both crops come from the annotation's box. A word
counts only where the recogniser reads the *original* crop exactly (TokBench's
refined ground truth), so the score measures what the tokenizer lost, not the
recogniser's own errors. T-ACC is the exact, case-sensitive match rate; T-NED is
1 - edit_distance / max(len(gt), len(pred)). Both are reported per relative-size
bin and as the unweighted mean of the bins.

The recogniser is a registered part: ``rapidocr`` (ONNX models inside the wheel,
offline) by default; ``doctr_parseq`` (TokBench's own) where python-doctr and its
weights are present.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vtok.config import NON_NEGATIVE, build_component, ranged
from vtok.eval.annotations import Word
from vtok.eval.bins import TEXT_EDGES, bin_labels, binned_means
from vtok.eval.metric import MetricUnavailable, WorstCases
from vtok.registry import register


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (unit costs), two-row dynamic programme."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def normalized_edit_similarity(gt: str, pred: str) -> float:
    """T-NED of one word: 1 - edit_distance / max(len(gt), len(pred)); 1.0 for two empty strings."""
    longest = max(len(gt), len(pred))
    return 1.0 if longest == 0 else 1.0 - edit_distance(gt, pred) / longest


class Recognizer:
    """Reads one word per crop: ``__call__(crops: list[PIL RGB]) -> list[str]``."""

    description: str

    def __call__(self, crops: list[Image.Image]) -> list[str]:
        raise NotImplementedError


def rapidocr_engine(params: dict[str, Any], skipped: str) -> tuple[Any, str]:
    """A RapidOCR engine built with ``params`` (quiet logging added) and rapidocr's version.

    Raises MetricUnavailable with ``skipped`` ("text fidelity", ...) where rapidocr is not installed.
    """
    try:
        from rapidocr import RapidOCR
    except ImportError:
        raise MetricUnavailable(f"{skipped} skipped: rapidocr is not installed (pip install 'vtok[eval]')") from None
    from importlib.metadata import version

    return RapidOCR(params={"Global.log_level": "critical", **params}), version("rapidocr")


def to_bgr(image: Image.Image) -> np.ndarray:
    """image: PIL -> (H, W, 3) uint8 in OpenCV's BGR channel order, contiguous (what RapidOCR reads)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


@register("recognizer", "rapidocr")
class RapidOCRRecognizer(Recognizer):
    """RapidOCR's PP-OCR recognition model through onnxruntime, detection and angle classifier off."""

    @dataclass
    class Config:
        threads: int = ranged(0, NON_NEGATIVE)  # 0: onnxruntime's default

    def __init__(self, cfg: Config | None = None):
        cfg = cfg or self.Config()
        params: dict[str, Any] = {"Global.text_score": 0.0}
        if cfg.threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = cfg.threads
        self.engine, version = rapidocr_engine(params, "text fidelity")
        self.description = f"rapidocr {version} recognition-only (PP-OCR rec model in the wheel, onnxruntime)"

    def __call__(self, crops: list[Image.Image]) -> list[str]:
        out = []
        for crop in crops:
            result = self.engine(to_bgr(crop), use_det=False, use_cls=False, use_rec=True)
            out.append("".join(result.txts or ()))
        return out


@register("recognizer", "doctr_parseq")
class DoctrParseqRecognizer(Recognizer):
    """docTR's PARSeq (french vocab, 32x128 input), the recogniser TokBench reports with."""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None):
        try:
            from doctr.models import recognition_predictor
        except ImportError:
            raise MetricUnavailable("doctr_parseq needs python-doctr (pip install python-doctr)") from None
        self.predictor = recognition_predictor("parseq", pretrained=True)
        self.description = "docTR PARSeq (pretrained), recognition-only"

    def __call__(self, crops: list[Image.Image]) -> list[str]:
        return [word for word, _ in self.predictor([np.asarray(c.convert("RGB")) for c in crops])]


def build_recognizer(name: str = "rapidocr") -> Recognizer:
    return build_component("recognizer", {"name": name})


def crop_box(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The box's pixels, rounded outward and clipped to the image."""
    x1, y1, x2, y2 = box
    left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
    right, bottom = min(image.width, int(np.ceil(x2))), min(image.height, int(np.ceil(y2)))
    return image.crop((left, top, max(right, left + 1), max(bottom, top + 1)))


@dataclass
class WordResult:
    image: str
    gt: str
    pred: str
    ratio: float
    accuracy: float
    ned: float


class TextFidelity:
    """``update(original, recon, words, name)`` per image; ``compute()`` gives TokBench's text columns.

    Args:
        recognizer: any :class:`Recognizer`.
        resolution: 256, 512 or 1024: selects TokBench's size bins.
        keep_worst: how many of the worst words (lowest T-NED) to keep, with crops, for the report.
    """

    def __init__(self, recognizer: Recognizer, resolution: int, keep_worst: int = 8):
        if resolution not in TEXT_EDGES:
            raise ValueError(f"TokBench text bins exist for {sorted(TEXT_EDGES)}, not {resolution}")
        self.recognizer, self.resolution, self.keep_worst = recognizer, resolution, keep_worst
        self.reset()

    def reset(self) -> None:
        self.results: list[WordResult] = []
        self.unread_originals = 0
        self.worst = WorstCases(self.keep_worst)

    def update(self, original: Image.Image, recon: Image.Image, words: list[Word], name: str = "") -> None:
        if original.size != recon.size:
            raise ValueError(f"{name}: original {original.size} and reconstruction {recon.size} differ in size")
        if not words:
            return
        crops_o = [crop_box(original, w.bbox) for w in words]
        crops_r = [crop_box(recon, w.bbox) for w in words]
        read_o = self.recognizer(crops_o)
        keep = [i for i, w in enumerate(words) if read_o[i] == w.rec]
        self.unread_originals += len(words) - len(keep)
        if not keep:
            return
        read_r = self.recognizer([crops_r[i] for i in keep])
        for i, pred in zip(keep, read_r, strict=True):
            w = words[i]
            r = WordResult(name, w.rec, pred, w.ratio, float(pred == w.rec), normalized_edit_similarity(w.rec, pred))
            self.results.append(r)
            self.worst.offer(-r.ned, r, crops_o[i], crops_r[i])

    def compute(self) -> dict[str, Any]:
        edges = TEXT_EDGES[self.resolution]
        acc, acc_mean, counts = binned_means([(r.ratio, r.accuracy) for r in self.results], edges)
        ned, ned_mean, _ = binned_means([(r.ratio, r.ned) for r in self.results], edges)
        labels = bin_labels(edges)
        out: dict[str, Any] = {f"T-ACC{lab}": v for lab, v in zip(labels, acc, strict=True)}
        out["T-ACC_mean"] = acc_mean
        out.update({f"T-NED{lab}": v for lab, v in zip(labels, ned, strict=True)})
        out["T-NED_mean"] = ned_mean
        out.update({f"words{lab}": c for lab, c in zip(labels, counts, strict=True)})
        out["words_scored"] = len(self.results)
        out["words_unread_in_original"] = self.unread_originals
        return out

    def worst_pairs(self) -> list[tuple[WordResult, Image.Image, Image.Image]]:
        return self.worst.pairs()

    def protocol(self) -> dict[str, Any]:
        return {
            "recognizer": self.recognizer.description,
            "crops": "ground-truth boxes on original and reconstruction, recognition only",
            "ground_truth": "words the recogniser reads exactly on the original",
            "T-ACC": "exact, case-sensitive match",
            "T-NED": "1 - edit_distance / max(len(gt), len(pred))",
            "bins": f"relative size, TokBench edges at {self.resolution}: {list(TEXT_EDGES[self.resolution])}",
            "mean": "unweighted mean of the bin means",
        }
