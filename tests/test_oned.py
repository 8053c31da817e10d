"""1D tokenizers: any prefix decodes, per-sample lengths, ordering parts, adaptive length."""

from __future__ import annotations

import pytest
import torch

import vtok
from vtok.config import build_component
from vtok.registry import names

PRESETS = [
    "configs/tokenizer/oned_tiny.yaml",
    "configs/tokenizer/oned_nested_tiny.yaml",
    "configs/tokenizer/oned_piece_tiny.yaml",
    "configs/tokenizer/oned_titok_tiny.yaml",
    "configs/tokenizer/oned_bypass_tiny.yaml",
    "configs/tokenizer/oned_binary_tiny.yaml",  # binary tokens: 2 sub-codes a position
    "configs/tokenizer/oned_patch1d_tiny.yaml",
]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_prefix_decodes_and_mixed_lengths_equal_separate_decodes(preset, images):
    tok = vtok.build(preset).eval()
    n = tok.num_tokens
    for k in range(1, n + 1):
        tokens = tok.encode(images, num_tokens=k)
        assert tokens.lengths.tolist() == [k, k]
        assert bool((tokens.ids[:, k:] == 0).all())
        assert tok.decode(tokens).shape == images.shape
    mixed = tok.encode(images, num_tokens=torch.tensor([1, n]))
    together = tok.decode(mixed)
    alone = torch.cat([tok.decode(tok.encode(images[i : i + 1], num_tokens=k)) for i, k in enumerate((1, n))])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    with pytest.raises(vtok.VtokError, match="num_tokens must lie"):
        tok.encode(images, num_tokens=n + 1)


@pytest.mark.parametrize("name", names("ordering"))
def test_ordering_parts_keep_the_prefix_and_fill_the_rest(name):
    part = build_component("ordering", {"name": name})
    lengths = part.sample_lengths(64, 8, torch.device("cpu"))
    assert lengths.shape == (64,) and bool(((lengths >= 1) & (lengths <= 8)).all())
    z = torch.randn(3, 8, 5)
    kept = torch.tensor([1, 5, 8])
    mask = torch.full((5,), 7.0)
    out = part.fill(z, kept, mask)
    for b, k in enumerate(kept.tolist()):
        assert torch.equal(out[b, :k], z[b, :k])
        if name != "redundant_pad":
            assert bool((out[b, k:] == 7.0).all())
        else:
            assert all(torch.equal(out[b, j], z[b, j % k]) for j in range(k, 8))


def test_tail_drop_keeps_one_length_per_batch_and_nested_dropout_one_per_sample():
    torch.manual_seed(0)
    tail = build_component("ordering", {"name": "tail_drop"})
    nested = build_component("ordering", {"name": "nested_dropout", "powers_of_two": True})
    assert len(set(tail.sample_lengths(32, 16, torch.device("cpu")).tolist())) == 1
    lengths = set(nested.sample_lengths(256, 16, torch.device("cpu")).tolist())
    assert lengths == {1, 2, 4, 8, 16}


@pytest.fixture(scope="module")
def trained_oned(tmp_path_factory):
    from vtok.tokenizers.train import train_tokenizer

    run = tmp_path_factory.mktemp("oned")
    # FSQ: no codebook to collapse in a short run. L2 at batch 8 for 400 steps: a curve that rises at every
    # prefix on the crops it trained on (at 200 steps of batch 4 it was flat past two tokens).
    overrides = ["train.steps=400", "train.batch_size=8", "train.lr=3e-3", "loss.l1_weight=0", "loss.l2_weight=1"]
    cfg = vtok.load_config(PRESETS[1], [*overrides, "train.log_every=50", "train.save_every=1000"])
    return vtok.load(train_tokenizer(cfg, run, progress=False)).eval()


@pytest.mark.slow
def test_quality_grows_with_the_prefix_after_brief_training(trained_oned):
    from vtok.builtin import builtin_crops
    from vtok.eval.psnr import psnr_per_image
    from vtok.images import pil_to_tensor

    # The ordering is what is tested, so on the crops the model trained on: a tiny model's held-out curve after
    # a few hundred steps is flat noise past the first tokens (the demo's bench_oned measures held-out curves).
    x = torch.stack([pil_to_tensor(im) for _, im in builtin_crops("train", 32)])
    psnr = [
        float(psnr_per_image(x, trained_oned.decode(trained_oned.encode(x, num_tokens=k))).mean()) for k in (1, 2, 4, 8)
    ]
    assert psnr[0] < psnr[1] < psnr[2] < psnr[3], psnr


@pytest.mark.slow
def test_adaptive_length_meets_the_target_with_fewer_tokens_on_plain_images(trained_oned):
    from vtok.builtin import builtin_crops
    from vtok.eval.adaptive import encode_adaptive
    from vtok.eval.psnr import psnr_per_image
    from vtok.images import pil_to_tensor

    busy = torch.stack([pil_to_tensor(im) for _, im in builtin_crops("train", 32)[:6]])
    plain = torch.zeros(6, 3, 32, 32) + torch.linspace(-0.6, 0.6, 6)[:, None, None, None]  # flat grey levels
    x = torch.cat([plain, busy])
    full = psnr_per_image(x, trained_oned.decode(trained_oned.encode(x)))
    threshold = float(full[6:].median())  # half of the busy crops reach it at full length
    result = encode_adaptive(trained_oned, x, f"psnr={threshold}")
    reachable = full >= threshold
    assert bool(result.met[reachable].all()) and not bool(result.met[~reachable].any())
    assert bool((result.scores[result.met] >= threshold).all())
    assert result.decodes <= 4  # ceil(log2 8) + 1 batched decodes
    lengths = result.tokens.lengths
    assert bool((lengths[~reachable] == 8).all())  # a target out of reach keeps every token
    assert lengths[:6].float().mean() < lengths[6:].float().mean()
    with pytest.raises(vtok.VtokError, match="target must look like"):
        encode_adaptive(trained_oned, x, "psnr")


def test_lpips_target_is_lower_is_better_and_needs_its_weights(tmp_path, monkeypatch):
    from vtok.eval import adaptive
    from vtok.eval.lpips import load_lpips

    tok = vtok.build("configs/tokenizer/oned_tiny.yaml").eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    load_lpips.cache_clear()
    with pytest.raises(vtok.VtokError, match="lpips target needs the LPIPS backbone"):
        adaptive.encode_adaptive(tok, x, "lpips=0.3")
    load_lpips.cache_clear()
    # The search itself with a distance in LPIPS's place: an image meets the target at or below it.
    mse = lambda real, fake: (real - fake).square().mean((1, 2, 3)).cpu()  # noqa: E731
    monkeypatch.setitem(adaptive.TARGETS, "lpips", (mse, False))
    monkeypatch.setattr(adaptive, "check_available", lambda name, device: None)
    with torch.no_grad():
        full = mse(x, tok.decode(tok.encode(x)))
    result = adaptive.encode_adaptive(tok, x, f"lpips={float(full.max()) + 1e-6}")
    assert bool(result.met.all()) and bool((result.scores <= float(full.max()) + 1e-6).all())
    assert bool((adaptive.encode_adaptive(tok, x, "lpips=0").tokens.lengths == tok.num_tokens).all())


def test_flow_decoder_is_reproducible_and_trains(tmp_path, images):
    from vtok.tokenizers.train import train_tokenizer
    from vtok.training import read_metrics

    flow = "configs/tokenizer/oned_flow_tiny.yaml"
    tok = vtok.build(flow).eval()
    tokens = tok.encode(images, num_tokens=torch.tensor([2, 8]))
    torch.testing.assert_close(
        tok.decode(tokens), tok.decode(tokens), rtol=0, atol=0
    )  # seeded, batch-independent noise
    alone = torch.cat([tok.decode(tokens[i]) for i in range(2)])
    torch.testing.assert_close(tok.decode(tokens), alone, rtol=0, atol=1e-5)
    cfg = vtok.load_config(flow, ["train.steps=40", "train.log_every=1", "train.save_every=1000", "train.lr=2e-3"])
    train_tokenizer(cfg, tmp_path, progress=False)
    rec = [r["rec"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert sum(rec[-10:]) < sum(rec[:10])


@pytest.mark.parametrize("name", names("pixel_head"))
def test_pixel_heads_map_patch_features_to_images_of_their_upsampling(name):
    head = build_component("pixel_head", {"name": name, "width": 32}, "head")
    grid = 2
    x = torch.randn(2, grid * grid, 32, requires_grad=True)
    out = head(x, grid)
    size = grid * head.upsample_factor
    assert out.shape == (2, 3, size, size) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad.abs().sum() > 0 and head.last_layer.shape[0] == 3


def test_linear_bypass_starts_as_the_principal_components_and_a_prefix_uses_its_tokens_only(images):
    """After the data init, the continuous path reproduces images inside the span of the init images exactly
    (8 images: rank 7 around their mean, within 8 tokens x 4 values), and a prefix's pixels do not depend on
    the values past it."""
    torch.manual_seed(0)
    tok = vtok.build("configs/tokenizer/oned_bypass_tiny.yaml").eval()
    x = torch.rand(8, 3, 32, 32) * 2 - 1
    tok.init_from_data(x)
    with torch.no_grad():
        z = tok._latents(x)
        full = torch.full((8,), tok.num_tokens)
        torch.testing.assert_close(tok._decode_latents(z, full), x, atol=1e-4, rtol=0)
        k = torch.full((8,), 1)  # 4 of the 7 components: a lossy prefix
        noisy = z.clone()
        noisy[:, 1:] += torch.randn_like(noisy[:, 1:])
        torch.testing.assert_close(tok._decode_latents(z, k), tok._decode_latents(noisy, k), atol=1e-5, rtol=0)
        assert tok._decode_latents(z, k).sub(x).pow(2).mean() > tok._decode_latents(z, full).sub(x).pow(2).mean()


def test_fitting_the_linear_decoder_to_sign_bits_makes_more_tokens_better():
    """Sign-bit codes after the principal-component init: without the fit every component's bit is written back
    at one size and a longer prefix is worse; with the least-squares gains each added token lowers the error."""
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    x = x + torch.linspace(-1, 1, 32).view(1, 1, 1, 32) * torch.randn(64, 1, 1, 1)  # a dominant component
    errors = {}
    for fit in (False, True):
        torch.manual_seed(0)
        overrides = ["model.quantizer={name: lfq, dim: 4, bits: 4, groups: 1}", f"model.bypass_scalar_codes={fit}"]
        tok = vtok.build("configs/tokenizer/oned_bypass_tiny.yaml", overrides).eval()
        tok.init_from_data(x)
        with torch.no_grad():
            z_q = tok.quantizer.lookup(tok.quantizer.quantize_ids(tok._latents(x)))
            errors[fit] = [float(tok.bypass_out(z_q, torch.full((64,), n)).sub(x).pow(2).mean()) for n in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(errors[True], errors[True][1:]))  # every added token helps
    assert errors[False][-1] > errors[False][0]  # unfitted: the small components' bits add noise
    assert errors[True][-1] < errors[False][-1]


def test_scalar_code_init_without_the_linear_path_is_refused():
    with pytest.raises(vtok.VtokError, match="needs model.linear_bypass"):
        vtok.build("configs/tokenizer/oned_tiny.yaml", ["model.bypass_scalar_codes=true"])


def test_adaptive_length_runs_on_binary_sub_code_tokens(images):
    """Adaptive length on a binary 1D tokenizer: every sample gets a length, each position keeps its sub-codes."""
    from vtok.eval.adaptive import encode_adaptive
    from vtok.eval.psnr import psnr_per_image

    torch.manual_seed(0)
    tok = vtok.build("configs/tokenizer/oned_binary_tiny.yaml").eval()
    x = images[:4]
    full = psnr_per_image(x, tok.decode(tok.encode(x)))
    result = encode_adaptive(tok, x, f"psnr={float(full.min()) - 0.01}")  # reachable by every sample at full length
    assert bool(result.met.all())
    tokens = result.tokens
    assert tokens.ids.shape[-1] == 2 and tokens.codebook_sizes == (16, 16)
    assert bool(((tokens.lengths >= 1) & (tokens.lengths <= tok.num_tokens)).all())
    assert bool((result.scores >= float(full.min()) - 0.01).all())


def test_quantizer_inputs_are_what_encode_quantizes():
    """``train.reinit_unused_codes`` re-fits codes on ``quantizer_inputs``: they must be the latents encode uses."""
    torch.manual_seed(0)
    tok = vtok.build("configs/tokenizer/oned_tiny.yaml").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = tok.quantizer_inputs(x)
    assert z.shape == (2, tok.num_tokens, tok.quantizer.dim)
    assert torch.equal(tok.quantizer.quantize_ids(z), tok.encode(x).ids)
