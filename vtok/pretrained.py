"""vtok's release format: ``config.json`` (names, arguments, format_version) + ``model.safetensors``.

``config.json`` holds ``{"format_version": 1, "kind": K, "model": spec}``: ``K`` is the
registry kind of the saved module (``"model"`` for a tokenizer or an AR model, as
every vtok has written; ``"quantizer"``, ``"encoder"``, ... for a part saved alone)
and ``spec`` its resolved config, ``{"name": ..., **fields}``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from vtok.errors import VtokError
from vtok.io import atomic_dir, write_safetensors

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def unique_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict with contiguous CPU copies (safetensors refuses shared or strided storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


class Saveable:
    """``save_pretrained`` / ``from_pretrained`` for every registered torch module.

    :func:`vtok.registry.register` records ``self.spec`` (the resolved config) when an
    instance is built, and gives these two methods to registered modules that lack
    them, so a part built alone (``VQ(VQ.Config(dim=8))``) saves and loads like a model.
    """

    spec: dict[str, Any]

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` atomically."""
        spec = getattr(self, "spec", None)
        kind = getattr(type(self), "registry_kind", None)
        if spec is None or kind is None:
            raise VtokError(f"{type(self).__name__} is not a registered class, so it has no config to save")
        config = {"format_version": FORMAT_VERSION, "kind": kind, "model": spec}
        if getattr(self, "source", None) is not None:
            config["source"] = self.source
        with atomic_dir(directory) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
            write_safetensors(unique_state(self), tmp / WEIGHTS_NAME, metadata={"format": "pt"})
        return Path(directory)

    @classmethod
    def from_pretrained(cls, ref: str | Path, map_location: str | torch.device = "cpu") -> Any:
        """Rebuild the module saved in ``ref`` (a folder or a Hub id ``org/name[@revision]``), weights loaded strictly.

        The folder must hold this class; a base class that is not registered itself
        (``Tokenizer``) takes any of its registered subclasses. Returned in eval mode.
        """
        from vtok.hub import model_dir

        return load_pretrained(model_dir(ref), map_location, expect=cls)


class Pretrained(Saveable):
    """Mixin for registered top-level models (tokenizers, AR models): what a loadable model has besides its weights."""

    # Where the weights came from when not trained by vtok (``vtok convert``): family, file, sha256, Hub id.
    source: dict[str, Any] | None = None
    # Top-level modules that belong to a named part for ``train.freeze`` (e.g. quant_conv to the encoder).
    part_of: dict[str, str] = {}

    def adapt_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Another model's weights, mapped for ``train.init_from`` (e.g. a class table grown to this size)."""
        return state

    def fingerprint(self) -> str:
        """sha256 over the config and every weight: token files record it, decode checks it.

        Cached: hashing every weight takes seconds for a large model, and the cache is
        keyed by each tensor's in-place version counter, so training steps or a
        ``load_state_dict`` recompute it.
        """
        state = self.state_dict()
        key = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
        cached = self.__dict__.get("_fingerprint")
        if cached is not None and cached[0] == key:
            return cached[1]
        h = hashlib.sha256(json.dumps(self.spec, sort_keys=True).encode())
        for name, tensor in sorted(state.items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu").contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        value = h.hexdigest()[:16]
        self.__dict__["_fingerprint"] = (key, value)
        return value


def read_config(directory: str | Path) -> dict[str, Any]:
    """Read and check a model folder's ``config.json``."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VtokError(f"model folder not found: {directory}")
    path = directory / CONFIG_NAME
    if not path.is_file():
        raise VtokError(f"{directory} is not a vtok model folder (no {CONFIG_NAME})")
    try:
        config = json.loads(path.read_text())
    except ValueError:  # bad JSON or bytes that are not UTF-8
        raise VtokError(f"{path} is not valid JSON") from None
    if not isinstance(config, dict) or "model" not in config:
        raise VtokError(f"{path} is not a vtok model config (no 'model' entry)")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise VtokError(f"{path} has format_version {version!r}; this vtok reads {FORMAT_VERSION}")
    return config


def saved_kind(config: dict[str, Any], directory: str | Path) -> tuple[str, str]:
    """The registry kind and name of the module a ``config.json`` describes (kind ``model`` when unstated)."""
    kind, spec = config.get("kind", "model"), config["model"]
    if not isinstance(kind, str) or not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise VtokError(f"{Path(directory) / CONFIG_NAME} names no registered module (bad 'kind' or 'model.name')")
    return kind, spec["name"]


def check_expected(expect: type, kind: str, name: str, directory: str | Path) -> None:
    """One line refusing a folder whose module is not ``expect`` (or, for an unregistered base, not of it)."""
    from vtok.registry import lookup

    if "registry_name" in expect.__dict__:
        ok = (kind, name) == (expect.registry_kind, expect.registry_name)
    else:
        ok = issubclass(lookup(kind, name), expect)
    if not ok:
        raise VtokError(f"{directory} holds the {kind} {name!r}, not a {expect.__name__}; load it with vtok.load")


def load_pretrained(directory: str | Path, map_location: str | torch.device = "cpu", expect: type | None = None) -> Any:
    """Rebuild the module saved in ``directory`` and load its weights strictly; ``expect``: the class it must be."""
    from vtok.config import build_component

    config = read_config(directory)
    kind, name = saved_kind(config, directory)
    if expect is not None:
        check_expected(expect, kind, name, directory)
    model = build_component(kind, config["model"], kind)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise VtokError(f"{directory} has no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError) as err:
        raise VtokError(f"{weights} is not a readable safetensors file ({err})") from None
    check_finite(state, str(weights))
    load_state_strict(model, state, str(weights))
    model.source = config.get("source")
    model.eval()
    return model


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf in one line naming the tensor: they encode every image to id 0
    and decode black, with no error anywhere else."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise VtokError(f"weights in {source}: {name} holds NaN or infinite values; the model is damaged")


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first bad keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or shape:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}")
        if extra:
            parts.append(f"unexpected {extra[:3]}")
        if shape:
            k = shape[0]
            parts.append(f"shape of {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}")
        raise VtokError(f"weights in {source} do not match the model: {'; '.join(parts)}")
    module.load_state_dict(state, strict=True)
