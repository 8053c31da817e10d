"""Pinned evaluation protocols: ``vtok eval --protocol NAME`` fixes every choice a published figure depends on.

Published rFIDs of the same checkpoint disagree because the choices behind them differ:
how the reference images are cropped, how many images are scored (5,000 or the 50,000 of
ImageNet's validation set), whose Inception weights are used, and whether the reference
statistics come from the training or the validation split. A :class:`Protocol` names each
choice once; :meth:`Protocol.resolve` turns it, a data folder and a model into a
:class:`PinnedRun`, which :func:`vtok.eval.evaluate.evaluate` follows (its images, in its
order, every one required to read) and whose :meth:`PinnedRun.pins` are written into
``results.json`` and ``results.md`` beside the scores.

Protocols are registered definitions (:func:`register_protocol`): a new one is a new
:class:`Protocol` value, never a mode string inside ``evaluate``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vtok.errors import VtokError


@dataclass(frozen=True)
class Protocol:
    """What a protocol pins (each field is written into the report as it is).

    Attributes:
        name: the ``--protocol`` name.
        title: one line for help texts and the report.
        data: the image set it is defined on, as the user must give it with ``--data``.
        images: the size of that whole set; a run scores all of them unless ``--count`` says fewer.
        crop: how each image becomes a square model input at the model's resolution.
        order: which images a ``--count`` below the whole set takes.
        reference: what the rFID reference statistics are computed from.
        features: the feature network of rFID.
        dtype: the precision of the model, the features and the statistics.
        metrics: the metrics it scores (``--metrics`` may name a subset).
    """

    name: str
    title: str
    data: str
    images: int
    crop: str
    order: str
    reference: str
    features: str
    dtype: str
    metrics: tuple[str, ...]

    def select(self, data: str | Path, count: int | None) -> list[tuple[str, Path]]:
        """(name relative to ``data``, path) of the images the protocol scores, in its order.

        ``data`` is a folder of images, flat or in class subfolders. Files are ordered by
        their base name (ImageNet's ``ILSVRC2012_val_00000001.JPEG`` ...), so the flat and
        the class-subfolder layouts of the same set give the same images in the same order,
        and a ``count`` takes the first ``count`` of them: a spread over every class, not the
        first classes. Without ``count`` the folder must hold exactly the whole set.
        """
        from vtok.data import list_images

        root = Path(data)
        if str(data) == "builtin" or not root.is_dir():
            raise VtokError(
                f"--protocol {self.name} needs --data FOLDER: {self.data} (flat or in class subfolders); "
                f"{data} is not a folder"
            )
        if count is not None and count < 1:
            raise VtokError(f"--count must be at least 1, got {count}")
        try:
            files = list_images(root)
        except VtokError:
            raise VtokError(f"--protocol {self.name}: {root} holds no images; it needs {self.data}") from None
        files = sorted(files, key=lambda f: (f.name, str(f.relative_to(root))))
        if count is None and len(files) != self.images:
            raise VtokError(
                f"--protocol {self.name} scores {self.data}; {root} holds {len(files)} images: "
                "give --count N to score the first N (stated in the report)"
            )
        if count is not None and count > len(files):
            raise VtokError(f"--count {count} is more than the {len(files)} images in {root}")
        chosen = files[: count if count is not None else len(files)]
        return [(str(f.relative_to(root)), f) for f in chosen]

    def resolve(
        self,
        data: str | Path,
        count: int | None,
        resolution: int | None,
        tokenizer: torch.nn.Module | None,
        published_resolution: int | None = None,
        metrics: list[str] | None = None,
    ) -> PinnedRun:
        """The run this protocol makes of ``data`` for one model (see :meth:`select` for the images).

        Args:
            resolution: ``--resolution`` if given; it must agree with the model's own.
            tokenizer: the model; a fixed-size encoder (TiTok's ``image_size``) states its resolution.
            published_resolution: the resolution of the model's published figure, where its
                checkpoint is a known release (:mod:`vtok.known`).
            metrics: ``--metrics`` if given: a subset of the protocol's.
        """
        native = model_resolution(tokenizer)
        stated = {"the model's encoder": native, "its published figure": published_resolution}
        stated = {k: v for k, v in stated.items() if v is not None}
        for where, value in stated.items():
            if resolution is not None and resolution != value:
                raise VtokError(
                    f"--protocol {self.name} scores at the model's resolution: {where} says {value}, "
                    f"--resolution says {resolution}"
                )
        size = resolution if resolution is not None else next(iter(stated.values()), None)
        if size is None:
            raise VtokError(
                f"--protocol {self.name}: the model does not state its resolution; give --resolution "
                "(the side it was trained and published at)"
            )
        if metrics is not None:
            outside = [m for m in metrics if m not in self.metrics]
            if outside:
                raise VtokError(
                    f"--protocol {self.name} scores {', '.join(self.metrics)}; {outside[0]!r} is not one of them"
                )
        items = self.select(data, count)
        dtype = None
        if tokenizer is not None:
            dtype = str(next(iter(tokenizer.parameters()), torch.empty(0)).dtype).removeprefix("torch.")
        return PinnedRun(self, items, size, list(metrics or self.metrics), str(data), dtype)


@dataclass
class PinnedRun:
    """One protocol applied to one data folder and model: the images, the resolution, the metrics.

    ``reference`` is filled by the evaluation: the rFID reference statistics (the Inception
    statistics of the protocol's images), which the report also writes as ``reference_stats.npz``.
    """

    protocol: Protocol
    items: list[tuple[str, Path]]
    resolution: int
    metrics: list[str]
    data: str
    model_dtype: str | None = None
    reference: Any = field(default=None, repr=False)

    @property
    def count(self) -> int:
        return len(self.items)

    def pins(self, scored: int | None = None, rfid_protocol: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every pinned choice, for ``results.json`` (``scored``: images actually scored)."""
        p = self.protocol
        whole = self.count == p.images
        pins: dict[str, Any] = {
            "name": p.name,
            "title": p.title,
            "data": f"{self.data} ({p.data})",
            "images": self.count,
            "subset": "the whole set" if whole else f"the first {self.count} of {p.images} ({p.order})",
            "resolution": self.resolution,
            "crop": p.crop,
            "reference": p.reference,
            "features": p.features,
            "dtype": f"model {self.model_dtype or 'as loaded'}; {p.dtype}",
            "metrics": ", ".join(self.metrics),
        }
        if scored is not None and scored != self.count:  # never expected: every image is required to read
            pins["scored"] = scored
        if rfid_protocol:
            pins["inception_weights"] = rfid_protocol.get("weights")
            pins["inception_weights_file_sha256"] = rfid_protocol.get("weights_file_sha256")
            pins["inception_state_sha256"] = rfid_protocol.get("weights_sha256")
        if not whole:
            pins["caution"] = f"{self.count} of {p.images} images: compare only with figures at the same count"
        return pins


def model_resolution(tokenizer: torch.nn.Module | None) -> int | None:
    """The resolution a model states itself: a fixed-size encoder's ``cfg.image_size`` (TiTok-style ViTs).

    Convolutional tokenizers take any size and state none.
    """
    cfg = getattr(getattr(tokenizer, "encoder", None), "cfg", None)
    size = getattr(cfg, "image_size", None)
    return size if isinstance(size, int) else None


_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    """File ``protocol`` under its name (once)."""
    if protocol.name in _PROTOCOLS and _PROTOCOLS[protocol.name] != protocol:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def protocols() -> dict[str, Protocol]:
    """Every registered protocol by name, sorted."""
    return dict(sorted(_PROTOCOLS.items()))


def lookup_protocol(name: str) -> Protocol:
    """The protocol called ``name``; a one-line :class:`VtokError` naming the others if none."""
    if name not in _PROTOCOLS:
        close = difflib.get_close_matches(name, _PROTOCOLS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise VtokError(f"unknown protocol {name!r}{hint}; registered: {', '.join(protocols())}")
    return _PROTOCOLS[name]


IMAGENET_VAL = register_protocol(
    Protocol(
        name="imagenet-val",
        title="ImageNet-1k validation reconstruction at the model's resolution (rFID, PSNR, SSIM, LPIPS)",
        data="the 50,000 ImageNet-1k (ILSVRC2012) validation images",
        images=50_000,
        crop=(
            "ADM center crop (guided-diffusion center_crop_arr, as LlamaGen and TiTok evaluate): halve with "
            "PIL BOX while the short side is >= 2x the resolution, BICUBIC resize of the short side to the "
            "resolution, central square"
        ),
        order="files sorted by base name, the same in a flat folder and in class subfolders",
        reference=(
            "the validation images themselves, cropped alike (not training-set statistics, "
            "not ADM's VIRTUAL_imagenet256 batch)"
        ),
        features=(
            "pytorch-fid InceptionV3 FID network (TF pt_inception-2015-12-05 weights), pool3 2048-d, "
            "8-bit inputs resized bilinearly to 299x299"
        ),
        dtype="Inception features float32, statistics float64 running sums, Frechet distance by pytorch-fid",
        metrics=("rfid", "psnr", "ssim", "lpips", "codebook"),
    )
)


def write_reference_stats(pinned: PinnedRun, path: str | Path) -> None:
    """The protocol's rFID reference statistics as an ADM/pytorch-fid style ``.npz`` (``mu``, ``sigma``, ``count``).

    Usable as ``vtok eval --metrics gfid --reference`` for generated images scored against
    the same validation images.
    """
    import numpy as np

    from vtok.io import atomic_path

    stats = pinned.reference
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mu=stats.mean, sigma=stats.covariance, count=np.int64(stats.count))
