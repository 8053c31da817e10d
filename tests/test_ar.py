"""The AR generator: every token layout trains and samples; cache, guidance, overfitting, shards, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import vtok
from vtok.ar_models.gpt import GPT
from vtok.ar_models.sample import SamplingConfig, _guided, generate
from vtok.cli import main

TINY = dict(num_classes=4, dim=32, depth=2, heads=4, depth_layers=1, class_dropout=0.1)
LAYOUTS = {
    "grid": dict(codebook_sizes=[48], grid=[4, 4]),
    "rq_stack": dict(codebook_sizes=[40, 40, 40], grid=[3, 3]),
    "dual_shared_multiscale": dict(codebook_sizes=[64], grid=None, length=5, scales=[[1, 1], [2, 2]]),
    "dualtoken_two_codebooks": dict(codebook_sizes=[32, 20], grid=[2, 3]),
    "variable_length_eos": dict(codebook_sizes=[30], grid=None, length=10, end_token=True),
    # Lookup-free codes factorised into sub-tokens (Open-MAGVIT2: 18 bits as 2 x 9): the depth heads predict the
    # groups of one position in turn; binary 1D tokens (8 bits as 2 x 4) with lengths.
    "lfq_sub_codes": dict(codebook_sizes=[512, 512], grid=[3, 3]),
    "lfq_asymmetric_sub_codes": dict(codebook_sizes=[64, 4096], grid=[3, 3]),  # Open-MAGVIT2's AR split, 6 + 12
    "binary_1d_sub_codes": dict(codebook_sizes=[16, 16], grid=None, length=6, end_token=True),
}


def _model(layout: str, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPT.Config(**LAYOUTS[layout], **TINY))


def _data(model: GPT, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, k, (n, model.positions), generator=g) for k in model.cfg.codebook_sizes], -1)
    labels = torch.randint(0, 4, (n,), generator=g)
    lengths = torch.randint(1, model.positions + 1, (n,), generator=g) if model.cfg.end_token else None
    return ids, labels, lengths


def memorise(model: GPT, ids: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> float:
    """Train ``model`` on one batch of ``ids`` (B, L, C) per ``labels`` (B,) until it knows them; the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss, _ = model(ids, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_trains_and_samples_inside_the_codebook(layout):
    model = _model(layout)
    ids, labels, lengths = _data(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss, _ = model(ids, labels, lengths)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    tokens = generate(model, torch.tensor([0, 3]), sampling=SamplingConfig(seed=1, cfg_scale=1.5, top_k=8, top_p=0.9))
    tokens.check_range()  # the end token never leaks into the ids
    model.check_tokens(tokens)
    assert tokens.ids.shape == (2, model.positions, model.codes)
    if model.cfg.end_token:
        assert tokens.lengths is not None and bool(((tokens.lengths >= 1) & (tokens.lengths <= model.positions)).all())


@pytest.mark.parametrize(
    "layout",
    ["grid", "rq_stack", "variable_length_eos", "lfq_sub_codes", "lfq_asymmetric_sub_codes", "binary_1d_sub_codes"],
)
def test_cached_and_uncached_sampling_give_the_same_tokens(layout):
    model = _model(layout)
    labels = torch.tensor([0, 1, 2, 3])
    for cfg_scale in (1.0, 3.0):
        a = generate(model, labels, sampling=SamplingConfig(seed=7, cfg_scale=cfg_scale, use_cache=True))
        b = generate(model, labels, sampling=SamplingConfig(seed=7, cfg_scale=cfg_scale, use_cache=False))
        assert torch.equal(a.ids, b.ids)
        assert (a.lengths is None and b.lengths is None) or torch.equal(a.lengths, b.lengths)


def test_guidance_at_scale_one_is_the_conditional_model():
    logits = torch.randn(6, 10)
    assert torch.allclose(_guided(logits, True, 1.0), logits[:3], atol=1e-6)
    model = _model("grid")
    plain = generate(model, torch.tensor([1, 2]), sampling=SamplingConfig(seed=3, cfg_scale=1.0))
    guided = generate(model, torch.tensor([1, 2]), sampling=SamplingConfig(seed=3, cfg_scale=1.0 + 1e-7))
    assert torch.equal(plain.ids, guided.ids)


def test_sampling_is_seeded():
    model = _model("grid")
    a = generate(model, torch.tensor([0, 1]), sampling=SamplingConfig(seed=5))
    b = generate(model, torch.tensor([0, 1]), sampling=SamplingConfig(seed=5))
    c = generate(model, torch.tensor([0, 1]), sampling=SamplingConfig(seed=6))
    assert torch.equal(a.ids, b.ids) and not torch.equal(a.ids, c.ids)


def test_a_tiny_model_overfits_a_tiny_token_set():
    torch.manual_seed(0)
    model = GPT(
        GPT.Config(codebook_sizes=[16], grid=[3, 3], num_classes=4, dim=64, depth=2, heads=4, class_dropout=0.0)
    )
    ids = torch.randint(0, 16, (4, 9, 1), generator=torch.Generator().manual_seed(1))
    labels = torch.arange(4)
    assert memorise(model, ids, labels) < 0.05
    samples = generate(model, labels, sampling=SamplingConfig(seed=0, top_k=1))
    assert torch.equal(samples.ids, ids)


def test_embeddings_initialised_from_the_tokenizer_codebook(tiny_tokenizer):
    k = tiny_tokenizer.codebook_sizes[0]
    model = GPT(GPT.Config(codebook_sizes=[k], grid=[2, 2], **TINY))
    model.init_embeddings_from(tiny_tokenizer)
    ids = torch.arange(k)[None, :, None]
    z = tiny_tokenizer.lookup(vtok.Tokens(ids, (k,), (1, k)))[0]
    e = model.tok_embeddings[0].weight
    exact = "donot_use_mm_for_euclid_dist"
    dz = torch.cdist(z - z.mean(0), z - z.mean(0), compute_mode=exact)
    de = torch.cdist(e, e, compute_mode=exact)
    assert torch.allclose(de / de.max(), dz / dz.max(), atol=1e-4)  # an orthogonal map keeps the geometry


@pytest.fixture
def class_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "data" / cls / f"{i}.png"
            )
    (tmp_path / "data" / "dog" / "broken.png").write_bytes(b"not an image")
    return tmp_path / "data"


def test_shards_train_resume_exactly_and_generate(tmp_path, tiny_tokenizer, class_folder, capsys):
    from vtok.shards import TokenShards

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    tok = str(tmp_path / "tok")
    shards_dir = tmp_path / "tokens"
    assert (
        main(
            ["encode", "--tokenizer", tok, str(class_folder), "--size", "32", "--shards", "4", "--out", str(shards_dir)]
        )
        == 0
    )
    shards = TokenShards(shards_dir)
    assert len(shards) == 10 and shards.classes == ["cat", "dog"] and shards.has_flip
    assert len(shards.index["shards"]) == 3
    row = shards.row(9)
    assert row.label == 1 and row.ids.shape == (tiny_tokenizer.encode(torch.zeros(1, 3, 32, 32)).num_positions, 1)

    args = ["configs/ar/gpt_tiny.yaml", f"data.source={shards_dir}", "train.save_every=2", "train.batch_size=4"]
    assert main(["train", *args, "train.steps=4", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *args, "train.steps=2", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", *args, "train.steps=4", "--out", str(tmp_path / "b")]) == 0  # resumes at step 2
    a, b = vtok.load(tmp_path / "a" / "final"), vtok.load(tmp_path / "b" / "final")
    assert a.cfg.num_classes == 2 and a.cfg.grid == list(shards.grid)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    # A sample grid at the last step: one decoded sample per class, side by side.
    with Image.open(tmp_path / "a" / "samples" / "step_00000004.png") as grid:
        assert grid.size[0] > grid.size[1] >= 32

    out = tmp_path / "gen" / "grid.png"
    argv = [
        "generate",
        "--model",
        str(tmp_path / "a" / "final"),
        "--tokenizer",
        tok,
        "--classes",
        "0,1",
        "--per-class",
        "2",
    ]
    assert main([*argv, "--cfg", "2.0", "--out", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".safetensors").is_file()
    capsys.readouterr()
    assert main([*argv[:-4], "--classes", "5", "--out", str(out)]) == 2
    assert "class labels must lie in [0, 2)" in capsys.readouterr().err
    other = tmp_path / "other"
    vtok.build("configs/tokenizer/vq_tiny.yaml").save_pretrained(other)
    assert main([*argv[:3], "--tokenizer", str(other), "--out", str(out)]) == 2
    assert "trained on tokens of tokenizer" in capsys.readouterr().err
