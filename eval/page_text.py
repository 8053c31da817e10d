"""Text preservation on whole images (VTBench's task 3): OCR the original and the reconstruction, CER and WER.

Unlike TokBench's word crops (:mod:`vtok.eval.text`), nothing is given to the
reader but the whole image: it detects the text lines and recognises them. The
transcript of the original is the reference and the reconstruction's is the
hypothesis, as VTBench scores; where the set knows the rendered string, both are
also scored against it (the original's error there is the reader's own floor).

Definitions (corpus level, as VTBench sums over the set before dividing):

- CER = sum of character edit distances / sum of reference characters.
- WER = sum of word edit distances / sum of reference words (the standard WER).
  VTBench's own "WER" divides *character* edits of the space-joined words by the
  word count; it is reported beside it as ``WER_vtbench`` for comparison.

Normalisation: whitespace runs become one space and the ends are stripped (the
reader's line breaks are arbitrary); case, punctuation and diacritics are kept,
as VTBench compares the strings as they are.

Readers are registered parts (``page_reader``): ``rapidocr`` (PP-OCR detection and
recognition from the wheel, offline; reads Latin and Chinese, not Cyrillic or
Greek) and ``vtbench_gemma`` (VTBench's recogniser, Gemma-3-12B-it prompted to
transcribe, where transformers and its weights are present).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from vtok.config import build_component
from vtok.eval.metric import Metric, MetricUnavailable, check_pair, to_unit
from vtok.eval.text import edit_distance, rapidocr_engine, to_bgr
from vtok.registry import register


def normalize(text: str) -> str:
    """Whitespace runs -> one space, ends stripped; nothing else changes."""
    return re.sub(r"\s+", " ", text).strip()


def word_edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Levenshtein distance over words (unit costs)."""
    prev = list(range(len(hyp) + 1))
    for i, a in enumerate(ref, 1):
        cur = [i]
        for j, b in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a != b)))
        prev = cur
    return prev[-1]


class PageReader:
    """Transcribes whole images: ``__call__(image: PIL RGB) -> str`` (lines in reading order)."""

    description: str

    def __call__(self, image: Image.Image) -> str:
        raise NotImplementedError


@register("page_reader", "rapidocr")
class RapidOCRPageReader(PageReader):
    """RapidOCR's PP-OCR detector and recogniser (ONNX, in the wheel); lines sorted top to bottom, left to right."""

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None):
        self.engine, version = rapidocr_engine({}, "OCR text preservation")
        self.description = f"rapidocr {version} detection + recognition (PP-OCR models in the wheel)"

    def __call__(self, image: Image.Image) -> str:
        result = self.engine(to_bgr(image), use_det=True, use_cls=False, use_rec=True)
        if result.boxes is None or not result.txts:
            return ""
        # Reading order: rows by the box's top edge (half a line height of tolerance), then left to right.
        boxes = np.asarray(result.boxes)  # (N, 4, 2) corners
        tops, lefts = boxes[:, :, 1].min(1), boxes[:, :, 0].min(1)
        height = float(np.median(boxes[:, :, 1].max(1) - tops)) or 1.0
        order = sorted(range(len(tops)), key=lambda i: (round(tops[i] / (0.5 * height)), lefts[i]))
        return normalize(" ".join(result.txts[i] for i in order))


@register("page_reader", "vtbench_gemma")
class GemmaPageReader(PageReader):
    """VTBench's recogniser: Gemma-3-12B-it asked to transcribe the image (resized to 1024 x 1024), greedy."""

    MODEL = "google/gemma-3-12b-it"

    @dataclass
    class Config:
        device: str = "cpu"  # where Gemma runs (it needs about 24 GB in bf16)

    def __init__(self, cfg: Config | None = None):
        cfg = cfg or self.Config()
        try:
            from transformers import AutoModelForImageTextToText, AutoProcessor
        except ImportError:
            raise MetricUnavailable("vtbench_gemma needs transformers (pip install transformers)") from None
        try:
            self.processor = AutoProcessor.from_pretrained(self.MODEL, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(
                self.MODEL, torch_dtype=torch.bfloat16, local_files_only=True
            ).to(cfg.device)
        except OSError:
            raise MetricUnavailable(
                f"vtbench_gemma skipped: {self.MODEL} is not in the local Hugging Face cache"
            ) from None
        self.device = cfg.device
        self.description = f"{self.MODEL} (VTBench's recogniser), image resized to 1024x1024, greedy decoding"

    def __call__(self, image: Image.Image) -> str:
        prompt = "Extract and output only the text from the image in its original language. If there is no text, return nothing."
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        chat = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=chat, images=[image.convert("RGB").resize((1024, 1024))], return_tensors="pt")
        with torch.inference_mode():
            ids = self.model.generate(**inputs.to(self.device), max_new_tokens=1024, do_sample=False)
        return normalize(self.processor.batch_decode(ids[:, inputs.input_ids.shape[-1] :], skip_special_tokens=True)[0])


@functools.cache
def _reader(name: str) -> PageReader:
    return build_component("page_reader", {"name": name})


class _Transcripts:
    """Transcripts by image content: the CER and WER metrics of one run share one reading of each image."""

    def __init__(self, reader: PageReader, limit: int = 4096):
        self.reader, self.limit, self.cache = reader, limit, {}

    def __call__(self, image: torch.Tensor) -> str:
        """image: (3, H, W) in [-1, 1] -> its transcript."""
        pixels = (to_unit(image[None])[0] * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
        key = hashlib.sha1(pixels.tobytes() + str(pixels.shape).encode()).hexdigest()
        if key not in self.cache:
            if len(self.cache) >= self.limit:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self.reader(Image.fromarray(pixels))
        return self.cache[key]


@functools.cache
def transcripts(reader: str) -> _Transcripts:
    """The shared transcript cache of ``reader`` (a ``page_reader`` name)."""
    return _Transcripts(_reader(reader))


class _PageErrorRate(Metric):
    """Streaming edit-distance rate between transcripts; ``update(real, fake, texts=None, scripts=None, groups=None)``.

    ``real``/``fake``: (B, 3, H, W) in [-1, 1]; ``texts``: the rendered strings where known.
    Columns: ``{U}`` (reconstruction vs original, VTBench's score), ``{U}_truth``
    (reconstruction vs the rendered text), ``{U}_original_truth`` (original vs the
    rendered text: the reader's own floor), ``{U}_<script>`` per script and
    ``{U}_<group>`` per group (the documents' print bands).
    """

    unit: str  # "CER" or "WER"
    running = ("sums", "pages")  # scored on rank 0 only (vtok.eval.vtbench), never merged
    takes_texts = True

    @dataclass
    class Config:
        reader: str = "rapidocr"  # page_reader part: rapidocr (offline) or vtbench_gemma (VTBench's recogniser)

    def __init__(self, cfg: Config | None = None):
        cfg = cfg or self.Config()
        self.read = transcripts(cfg.reader)
        self.reader_description = self.read.reader.description
        self.reset()

    def reset(self) -> None:
        # column -> [edits, reference length]
        self.sums: dict[str, list[float]] = {}
        self.pages = 0

    def _units(self, text: str) -> Any:
        return text if self.unit == "CER" else text.split()

    def _add(self, column: str, ref: str, hyp: str) -> None:
        r, h = self._units(ref), self._units(hyp)
        dist = edit_distance(r, h) if self.unit == "CER" else word_edit_distance(r, h)
        acc = self.sums.setdefault(column, [0.0, 0.0])
        acc[0] += dist
        acc[1] += len(r)
        if self.unit == "WER" and column == "WER":
            # VTBench's variant: character edits of the space-joined words per reference word.
            alt = self.sums.setdefault("WER_vtbench", [0.0, 0.0])
            alt[0] += edit_distance(" ".join(r), " ".join(h))
            alt[1] += len(r)

    def update(
        self,
        real: torch.Tensor,
        fake: torch.Tensor,
        texts: list[str | None] | None = None,
        scripts: list[str | None] | None = None,
        groups: list[str | None] | None = None,
    ) -> None:
        check_pair(real, fake)
        self.pages += real.shape[0]
        for i in range(real.shape[0]):
            ref, hyp = self.read(real[i]), self.read(fake[i])
            u = self.unit
            self._add(u, ref, hyp)
            script = scripts[i] if scripts else None
            if script:
                self._add(f"{u}_{script}", ref, hyp)
            group = groups[i] if groups else None
            if group:
                self._add(f"{u}_{group}", ref, hyp)
            truth = normalize(texts[i]) if texts and texts[i] is not None else None
            if truth is not None:
                self._add(f"{u}_truth", truth, hyp)
                self._add(f"{u}_original_truth", truth, ref)
                if script:
                    self._add(f"{u}_original_truth_{script}", truth, ref)

    def compute(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for column, (edits, length) in self.sums.items():
            # An empty reference: VTBench reports 0; vtok says NaN so an unread page cannot look perfect.
            out[column] = edits / length if length else float("nan")
        out["pages"] = float(self.pages)
        return out

    def protocol(self) -> dict[str, Any]:
        return {
            "reader": self.reader_description,
            "reference": "the reader's transcript of the original (VTBench); *_truth: the rendered string",
            "normalisation": "whitespace runs -> one space, ends stripped; case, punctuation, diacritics kept",
            "definition": (
                "sum of character edit distances / sum of reference characters"
                if self.unit == "CER"
                else "sum of word edit distances / sum of reference words; WER_vtbench: character edits per word"
            ),
            "reduction": "corpus level (sums over the set, then one division), as VTBench",
        }


@register("metric", "cer")
class CER(_PageErrorRate):
    """Character error rate between whole-image transcripts (see the module docstring)."""

    unit = "CER"


@register("metric", "wer")
class WER(_PageErrorRate):
    """Word error rate between whole-image transcripts (see the module docstring)."""

    unit = "WER"
