"""Token-Shuffle in the GPT: windows round-trip, cached sampling equals recomputation, presets train and sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from tests.test_ar import memorise
from vtok import fast
from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, generate
from vtok.ar_models.shuffle import from_windows, to_windows
from vtok.cli import main
from vtok.config import build_component

TINY = dict(num_classes=4, dim=32, depth=2, heads=4, depth_layers=1, class_dropout=0.1)
LAYOUTS = {
    "grid": dict(codebook_sizes=[48], grid=[4, 6]),
    "rq_stack": dict(codebook_sizes=[40, 40, 40], grid=[4, 4]),
    "lfq_sub_codes": dict(codebook_sizes=[64, 512], grid=[2, 4]),
}


def _model(layout: str, s: int = 2, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPT.Config(**LAYOUTS[layout], **TINY, shuffle=s))


@pytest.mark.parametrize("grid,s", [((4, 4), 2), ((6, 4), 2), ((6, 9), 3), ((8, 8), 4), ((3, 5), 1)])
def test_shuffle_then_unshuffle_is_the_identity_on_ids(grid, s):
    ids = torch.randint(0, 1000, (3, grid[0] * grid[1], 2))
    windows = to_windows(ids, grid, s)
    assert windows.shape == (3, grid[0] * grid[1] // (s * s), s * s, 2)
    assert torch.equal(from_windows(windows, grid, s), ids)


def test_a_window_holds_its_s_by_s_neighbours_in_raster_order():
    ids = torch.arange(16)[None, :, None]  # a 4x4 grid numbered in raster order
    windows = to_windows(ids, (4, 4), 2)[0, :, :, 0]
    assert windows.tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_a_step_covers_a_window_at_the_window_centre():
    model = _model("grid")
    assert model.positions == 24 and model.max_steps == 6 and model.group == 4
    plain = GPT(GPT.Config(**LAYOUTS["grid"], **TINY))
    assert plain.max_steps == 24 and plain.token_shuffle is None
    coords = model._coords(model.max_steps)
    assert coords.tolist() == [[0.5, 0.5], [0.5, 2.5], [0.5, 4.5], [2.5, 0.5], [2.5, 2.5], [2.5, 4.5]]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_cached_sampling_equals_recomputation_at_s2(layout):
    model = _model(layout)
    labels = torch.tensor([0, 1, 2, 3])
    for cfg_scale, top_k, top_p in [(1.0, 0, 1.0), (3.0, 8, 0.9)]:
        kw = dict(seed=7, cfg_scale=cfg_scale, top_k=top_k, top_p=top_p)
        a = generate(model, labels, sampling=SamplingConfig(**kw, use_cache=True))
        b = generate(model, labels, sampling=SamplingConfig(**kw, use_cache=False))
        assert torch.equal(a.ids, b.ids)
        a.check_range()
        model.check_tokens(a)
        assert a.ids.shape == (4, model.positions, model.codes)


@pytest.mark.parametrize("layout", ["grid", "rq_stack"])
def test_training_step_lowers_the_loss_and_every_shuffle_weight_learns(layout):
    model = _model(layout)
    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(0, k, (6, model.positions), generator=g) for k in model.cfg.codebook_sizes], -1)
    labels = torch.randint(0, 4, (6,), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for i in range(5):
        loss, logits = model(ids, labels)
        opt.zero_grad()
        loss.backward()
        if i == 0:
            assert logits.shape == (6, model.positions, model.cfg.codebook_sizes[0])
            for name, p in model.token_shuffle.named_parameters():
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]


def test_a_shuffle_model_overfits_a_tiny_token_set_per_class():
    """Greedy windows reproduce each class's grid: the class prefix conditions every window."""
    torch.manual_seed(0)
    model = GPT(
        GPT.Config(
            codebook_sizes=[16], grid=[4, 4], num_classes=4, dim=64, depth=2, heads=4, class_dropout=0.0, shuffle=2
        )
    )
    ids = torch.randint(0, 16, (4, 16, 1), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4)
    assert memorise(model, ids, labels) < 0.05
    for cfg_scale in (1.0, 2.0):
        samples = generate(model, labels, sampling=SamplingConfig(seed=0, top_k=1, cfg_scale=cfg_scale))
        assert torch.equal(samples.ids, ids)


@pytest.mark.parametrize(
    "bad,message",
    [
        (dict(codebook_sizes=[16], grid=[3, 4]), r"must divide the token grid \[3, 4\]"),
        (dict(codebook_sizes=[16], grid=None, length=8), "needs a single 2D grid"),
        (dict(codebook_sizes=[16], grid=None, length=8, end_token=True), "needs a single 2D grid"),
        (dict(codebook_sizes=[16], grid=[2, 2], scales=[[1, 1], [2, 2]]), "needs a single 2D grid"),
    ],
)
def test_layouts_a_window_does_not_fit_are_refused_in_one_line(bad, message):
    with pytest.raises(vtok.VtokError, match=message):
        GPT(GPT.Config(**bad, **TINY, shuffle=2))


def test_shuffle_below_one_is_refused_by_its_range():
    with pytest.raises(vtok.VtokError, match="shuffle"):
        build_component("model", {"name": "gpt", **LAYOUTS["grid"], **TINY, "shuffle": 0}, "model")


@pytest.mark.skipif(fast.compile_problem() is not None, reason=str(fast.compile_problem()))
def test_the_compiled_static_step_gives_the_same_windows():
    model = _model("grid")
    labels = torch.tensor([0, 3])
    s = SamplingConfig(seed=2, cfg_scale=2.0, top_k=10)
    assert torch.equal(generate(model, labels, sampling=s, compile=True).ids, generate(model, labels, sampling=s).ids)


def test_the_tiny_preset_trains_and_samples_from_shards(tmp_path, tiny_tokenizer):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tok, shards = str(tmp_path / "tok"), str(tmp_path / "tokens")
    assert (
        main(["encode", "--tokenizer", tok, str(tmp_path / "data"), "--size", "32", "--shards", "4", "--out", shards])
        == 0
    )
    args = ["configs/ar/gpt_shuffle_tiny.yaml", f"data.source={shards}", "train.steps=3", "train.batch_size=4"]
    assert main(["train", *args, "train.save_every=3", "--out", str(tmp_path / "run")]) == 0
    model = vtok.load(tmp_path / "run" / "final")
    assert isinstance(model, GPT) and model.cfg.shuffle == 2 and model.max_steps == model.positions // 4
    out = tmp_path / "gen.png"
    argv = ["generate", "--model", str(tmp_path / "run" / "final"), "--tokenizer", tok, "--classes", "0,1"]
    assert main([*argv, "--cfg", "2.0", "--top-k", "20", "--out", str(out)]) == 0
    assert out.is_file()
