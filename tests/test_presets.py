"""Every shipped preset loads the way ``vtok train`` loads it and builds; a GPT trains on every tiny tokenizer.

Presets are found on disk, so a new YAML file is tested with no edit here. Every preset is built on the meta device
(no memory, no time: its parameter count), and those under :data:`CPU_BUILD_LIMIT` parameters are built for real on
the CPU and code one image. Fine-tuning overlays are merged over every preset they fit, as ``--overlay`` does.
Every tiny tokenizer preset trains every parameter in one pass, and its tokens, written to shards, train and feed
a GPT built from the shards' layout as ``vtok train`` builds it (grids, stacks, sub-codes, dual, 1D, multi-scale).
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, generate
from vtok.ar_models.train import layout_from_shards
from vtok.config import build_component, read_yaml
from vtok.finetune import part_modules
from vtok.registry import lookup
from vtok.shards import TokenShards, shard_batches, write_shards

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
TOKENIZERS = sorted((CONFIGS / "tokenizer").glob("*.yaml"))
AR = sorted((CONFIGS / "ar").glob("*.yaml"))
OVERLAYS = sorted((CONFIGS / "finetune").glob("*.yaml"))
TINY_TOKENIZERS = [p for p in TOKENIZERS if "tiny" in p.stem]
CPU_BUILD_LIMIT = 30_000_000


def _ids(paths: list[Path]) -> list[str]:
    return [f"{p.parent.name}/{p.stem}" for p in paths]


@cache
def meta_model(preset: Path) -> torch.nn.Module:
    """The preset's model built on the meta device: every shape, no weights."""
    with torch.device("meta"):
        return build_component("model", vtok.load_config(preset)["model"], "model")


def test_presets_are_found():
    assert TOKENIZERS and AR and OVERLAYS and len(TINY_TOKENIZERS) >= 10


@pytest.mark.parametrize("preset", TOKENIZERS + AR, ids=_ids(TOKENIZERS + AR))
def test_every_preset_loads_and_builds(preset: Path):
    cfg = vtok.load_config(preset)  # what `vtok train PRESET` reads: schema, types and ranges checked
    model_cls = lookup("model", cfg["model"]["name"])
    assert issubclass(model_cls, (GPT, vtok.Tokenizer)), f"{preset.name}: `vtok train` has no trainer for it"
    if issubclass(model_cls, vtok.Tokenizer):
        assert cfg["loss"] is not None or _inference_only(cfg), (
            f"{preset.name}: a tokenizer preset needs a loss section"
        )
    count = sum(p.numel() for p in meta_model(preset).parameters())
    assert count > 0
    if count > CPU_BUILD_LIMIT:
        return
    torch.manual_seed(0)
    model = vtok.build(preset)
    assert sum(p.numel() for p in model.parameters()) == count  # the meta count is the real one
    if isinstance(model, vtok.Tokenizer):
        size = cfg["data"]["image_size"]
        x = torch.rand(1, 3, size, size) * 2 - 1
        with torch.no_grad():
            tokens = model.eval().encode(x)
            assert model.decode(tokens).shape == x.shape


@pytest.mark.parametrize("preset", TOKENIZERS, ids=_ids(TOKENIZERS))
def test_every_tokenizer_preset_loss_builds(preset: Path):
    """The training loss (discriminator, perceptual network, regulariser); skipped with its one-line reason where a
    pretrained network it names has no weights here (lpips_vgg offline)."""
    cfg = vtok.load_config(preset)
    if cfg.get("loss") is None and _inference_only(cfg):
        pytest.skip(f"{preset.stem}: its decoder is converted only, so the preset has no training loss")
    spec = cfg["loss"]
    try:
        with torch.device("meta"):
            loss = build_component("loss", spec, "loss")
    except vtok.VtokError as err:
        if "weights" not in str(err):
            raise
        pytest.skip(f"{preset.stem}: {err}")
    assert loss.discriminator is not None


def _inference_only(cfg: dict) -> bool:
    """Whether the preset's decoder declares that vtok cannot train it (converted weights only)."""
    decoder = cfg["model"].get("decoder")
    return bool(decoder) and lookup("decoder", decoder["name"]).inference_only is not None


def fits(overlay: dict, preset: dict) -> bool:
    """An overlay fits the presets that have every section it sets (fine-tuning overlays: tokenizer presets) and
    whose model has every model key it sets (the halting overlay: 1D models only)."""
    if not all(preset.get(key) is not None for key in overlay):
        return False
    model_keys = set(overlay.get("model") or {})
    fields = {f.name for f in dataclasses.fields(lookup("model", preset["model"]["name"]).Config)}
    return model_keys <= fields


@pytest.mark.parametrize("overlay", OVERLAYS, ids=_ids(OVERLAYS))
def test_every_overlay_merges_over_the_presets_it_fits(overlay: Path):
    raw = read_yaml(overlay)
    matching = [p for p in TOKENIZERS + AR if fits(raw, read_yaml(p))]
    assert matching, f"{overlay.name} fits no preset"
    for preset in matching:
        cfg = vtok.load_config(preset, overlays=[overlay])  # `vtok train PRESET --overlay OVERLAY`
        parts = part_modules(meta_model(preset))
        unknown = [name for name in cfg["train"]["freeze"] if name not in parts]
        assert not unknown, f"{overlay.name} over {preset.name} freezes {unknown}, not parts of its model"


# --- a GPT over every tiny tokenizer's tokens, built from the shards as `vtok train` builds it ------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Six random images of 40-64 px in two classes (ImageNet-style subfolders)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        side = int(rng.integers(40, 65))
        (root / f"class{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(root / f"class{i % 2}/{i}.png")
    return root


@pytest.mark.parametrize("preset", TINY_TOKENIZERS, ids=_ids(TINY_TOKENIZERS))
def test_a_gpt_trains_and_samples_on_every_tiny_tokenizer(preset: Path, image_folder: Path, tmp_path: Path):
    torch.manual_seed(0)
    tokenizer = vtok.build(preset).eval()
    size = vtok.load_config(preset)["data"]["image_size"]
    write_shards(tokenizer, str(image_folder), size, tmp_path / "tokens", batch_size=3, progress=False)
    shards = TokenShards(tmp_path / "tokens")
    ar = vtok.load_config(CONFIGS / "ar" / "gpt_tiny.yaml", [f"data.source={tmp_path / 'tokens'}"])
    model = build_component("model", layout_from_shards(ar["model"], shards), "model")
    assert isinstance(model, GPT) and model.positions == shards.positions

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _, (ids, labels, lengths) in zip(range(2), shard_batches(shards, 4, seed=0, start=0)):
        loss, _ = model(ids, labels, lengths)
        assert torch.isfinite(loss), f"{preset.stem}: loss {loss.item()}"
        opt.zero_grad()
        loss.backward()
        opt.step()

    labels = torch.tensor([0, 1])
    cached = generate(model, labels, sampling=SamplingConfig(seed=3, cfg_scale=2.0, use_cache=True))
    recomputed = generate(model, labels, sampling=SamplingConfig(seed=3, cfg_scale=2.0, use_cache=False))
    assert torch.equal(cached.ids, recomputed.ids)
    assert (cached.lengths is None) == (recomputed.lengths is None)
    if cached.lengths is not None:
        assert torch.equal(cached.lengths, recomputed.lengths)
    model.check_tokens(cached)
    with torch.no_grad():
        images = tokenizer.decode(cached)
    assert images.shape == (2, 3, size, size) and torch.isfinite(images).all()


def test_a_multiscale_gpt_places_each_token_at_the_centre_of_its_area_and_refuses_other_layouts():
    scales = [[1, 1], [2, 2], [4, 4]]
    tiny = dict(codebook_sizes=[16], num_classes=2, dim=32, depth=1, heads=2)
    model = GPT(GPT.Config(grid=[4, 4], scales=scales, **tiny))
    assert model.positions == 21 and model.step_scale.tolist() == [0] + [1] * 4 + [2] * 16
    coords = model._coords(model.positions)
    assert coords[0].tolist() == [1.5, 1.5]  # scale 1 covers the whole 4x4 grid
    assert coords[1:5].tolist() == [[0.5, 0.5], [0.5, 2.5], [2.5, 0.5], [2.5, 2.5]]  # scale 2: 2x2 blocks
    assert coords[5:].tolist() == [[r, c] for r in range(4) for c in range(4)]  # the last scale: the grid itself
    plain = GPT(GPT.Config(grid=[4, 4], **tiny))
    assert torch.equal(model.angles[6:], plain.angles[1:])  # the last scale rotates as a plain grid does
    for bad, message in [
        (dict(grid=[2, 2], scales=scales), "must be its last scale"),
        (dict(grid=None, length=20, scales=scales), "must be the scales' 21 positions"),
        (dict(grid=[4, 4], scales=scales, end_token=True), "fixed length"),
    ]:
        with pytest.raises(vtok.VtokError, match=message):
            GPT(GPT.Config(**{**tiny, **bad}))
    ids = torch.zeros(1, 21, 1, dtype=torch.long)
    with pytest.raises(vtok.VtokError, match="scales"):
        model.check_tokens(vtok.Tokens(ids, (16,), (4, 4), scales=((1, 1),) * 5 + ((4, 4),)))  # 21 positions too


@pytest.mark.parametrize("preset", TINY_TOKENIZERS, ids=_ids(TINY_TOKENIZERS))
def test_every_tiny_tokenizer_trains_every_parameter(preset: Path):
    """One training pass of each tiny preset reaches every trainable parameter (each quantizer in its model)."""
    from tests.test_registry import check_gradients

    torch.manual_seed(0)
    tokenizer = vtok.build(preset).train()
    if getattr(tokenizer.decoder, "inference_only", None):
        pytest.skip(f"{preset.stem}: {tokenizer.decoder.inference_only}")
    size = vtok.load_config(preset)["data"]["image_size"]
    x = torch.rand(2, 3, size, size) * 2 - 1
    out = tokenizer(x)
    ((out.recon.float() - x).square().mean() + sum(out.losses.values(), torch.zeros(()))).backward()
    check_gradients(tokenizer, preset.stem)
