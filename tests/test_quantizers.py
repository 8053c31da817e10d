"""Every registered quantizer: lookup inverts forward, the lean id search matches the library."""

from __future__ import annotations

import pytest
import torch

from vtok import fast
from vtok.config import build_component
from vtok.registry import names
from vtok.tokenizers.quantizers import vqlib

# Small settings that exercise each quantizer's options; a new quantizer is tested as soon as it registers.
VARIANTS = {
    "vq": [
        {"dim": 8, "codebook_size": 32},
        {"dim": 8, "codebook_size": 32, "cosine": False},
        {"dim": 8, "codebook_size": 32, "cosine": False, "ema": False},
        {"dim": 8, "codebook_size": 32, "codebook_dim": 4, "rotation_trick": False},
        {"dim": 8, "codebook_size": 32, "kmeans_init": True, "dead_code_threshold": 2.0, "entropy_weight": 0.1},
    ],
    "rvq": [
        {"dim": 8, "depth": 3, "codebook_size": 32},
        {"dim": 8, "depth": 2, "codebook_size": 16, "shared_codebook": False, "quantize_dropout": False},
        {"dim": 8, "depth": 3, "codebook_size": 32, "codebook_dim": 4, "kmeans_init": True},
    ],
    "mcq": [{}, {"dim": 8, "codebooks": 2, "codebook_size": 16, "beta": 0.5}],  # UniTok's; defaults are the published
    "rq_shared_step": [{"dim": 8, "depth": 3, "codebook_size": 32}],  # DualToken's semantic half: one update a step
    "rq_shared": [  # RQ-VAE's: one EMA codebook for every level; with and without restarts of unused codes
        {"dim": 8, "depth": 3, "codebook_size": 32},
        {"dim": 8, "depth": 2, "codebook_size": 16, "restart_unused_codes": False, "decay": 0.9},
    ],
    "ibq": [{}, {"dim": 8, "codebook_size": 32, "entropy_weight": 0.0}],
    "tokenflow_learned": [  # 16 positions = a 4x4 grid
        {"semantic_dim": 4, "pixel_dim": 4, "codebook_size": 32, "scales": [1, 2, 4]},
        {
            "semantic_dim": 6,
            "pixel_dim": 2,
            "codebook_size": 16,
            "scales": [2, 4],
            "pixel_weight": 2.0,
            "scale_drop": 1.0,
        },
    ],
    "tokenflow": [  # 16 positions = a 4x4 grid
        {"semantic_dim": 4, "pixel_dim": 4, "codebook_size": 32, "scales": [1, 2, 4]},
        {
            "semantic_dim": 6,
            "pixel_dim": 2,
            "codebook_size": 16,
            "scales": [2, 4],
            "pixel_weight": 2.0,
            "scale_drop": 1.0,
        },
    ],
    "fsq": [
        {"dim": 3, "levels": [5, 4, 4]},
        {"dim": 8, "levels": [8, 5, 5, 5]},
        {"dim": 3, "levels": [5, 4, 4], "preserve_symmetry": True, "noise_dropout": 0.5},
    ],
    "vq_learned": [  # LlamaGen's: l2-normalised codes learned by gradient; and a Euclidean one
        {"dim": 8, "codebook_size": 32},
        {"dim": 8, "codebook_size": 32, "l2_norm": False, "entropy_weight": 0.1},
    ],
    "msvq": [  # VAR's: 16 positions = a 4x4 grid
        {"dim": 8, "codebook_size": 32, "scales": [1, 2, 4]},
        {"dim": 8, "codebook_size": 16, "scales": [1, 2, 3, 4], "phi_count": 0, "cosine": True},
        {"dim": 8, "codebook_size": 16, "scales": [2, 4], "phi_count": 1, "phi_ratio": 0.0},
    ],
    "lfq": [  # 8 bits as 2 sub-codes of 4 (Open-MAGVIT2's factorisation at small size); one group; a projection
        {"dim": 8, "bits": 8, "groups": 2},
        {"dim": 6, "bits": 6, "groups": 1, "diversity_gamma": 0.5},
        {"dim": 16, "bits": 6, "groups": 3, "per_sample_entropy_share": 0.5},
        {"dim": 9, "bits": 9, "groups": 3, "sub_codes": [3, 6]},  # Open-MAGVIT2's asymmetric split, scaled down
    ],
    "bsq": [
        {"dim": 8, "bits": 8, "groups": 2},
        {"dim": 12, "bits": 6, "groups": 1},
        {"dim": 8, "bits": 8, "groups": 2, "sub_codes": [2, 6]},
    ],
    "simvq": [
        {"dim": 8, "codebook_size": 32},
        {"dim": 8, "codebook_size": 32, "frozen_dim": 16, "rotation_trick": False},
    ],
    "residual_lfq": [
        {"dim": 8, "bits": 4, "depth": 3},
        {"dim": 4, "bits": 4, "depth": 2, "quantize_dropout": False},
    ],
    "residual_fsq": [
        {"dim": 8, "levels": [5, 4, 4], "depth": 3},
        {"dim": 3, "levels": [5, 4, 4], "depth": 2, "quantize_dropout": False},
    ],
    "dual_rvq": [
        {
            "semantic": {"name": "rvq", "dim": 4, "depth": 2, "codebook_size": 16},
            "pixel": {"name": "rvq", "dim": 4, "depth": 1, "codebook_size": 8},
        }
    ],
}


def cases():
    for name in names("quantizer"):
        for i, options in enumerate(VARIANTS.get(name, [{}])):
            yield pytest.param(name, options, id=f"{name}-{i}")


# The invariants every quantizer keeps, as plain functions of a registered name and its options, so a quantizer
# defined elsewhere (docs/extending.md's example, tests/test_extending.py) is held to the same checks.


def check_lookup_inverts_forward(name: str, options: dict) -> None:
    """After a few training steps, in eval: ids (B, L', C) int64, z_q float32, lookup(ids) == z_q, lean ids equal."""
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": name, **options})
    x = torch.randn(4, 16, q.dim)
    q.train()
    for _ in range(3):  # let EMA / k-means / restarts move the codebook first
        out = q(x)
    assert set(out.losses) >= {"commit"}
    assert all(torch.isfinite(v) for v in out.losses.values())
    q.eval()
    out = q(x)
    assert out.ids.shape == (4, q.token_positions(16), len(q.codebook_sizes)) and out.ids.dtype == torch.long
    assert out.z_q.dtype == torch.float32
    torch.testing.assert_close(q.lookup(out.ids), out.z_q, rtol=0, atol=1e-6)
    assert torch.equal(q.quantize_ids(x), out.ids)


def check_gradients_reach_the_encoder_side(name: str, options: dict) -> None:
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": name, **options}).train()
    x = torch.randn(2, 16, q.dim, requires_grad=True)  # 16 positions: also a 4x4 grid
    out = q(x)
    (out.z_q.sum() + sum(out.losses.values())).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def check_float32_under_bf16_autocast(name: str, options: dict) -> None:
    """The same float32 latents give the same ids and codes with autocast on: bf16 never reaches the search."""
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": name, **options}).eval()
    latents = torch.randn(4, 16, q.dim)
    with torch.no_grad():
        want = q(latents)
        with fast.autocast("cpu", "bf16"):
            got = q(latents)
            ids = q.quantize_ids(latents)
            codes = q.lookup(want.ids)
    assert torch.equal(got.ids, want.ids) and torch.equal(ids, want.ids)
    assert got.z_q.dtype == torch.float32 and codes.dtype == torch.float32
    torch.testing.assert_close(got.z_q, want.z_q)


def check_evaluation_changes_no_state(name: str, options: dict) -> None:
    """A fresh quantizer used in eval mode keeps its weights: k-means init and EMA updates are training steps."""
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": name, **options}).eval()
    before = {k: v.clone() for k, v in q.state_dict().items()}
    with torch.no_grad():
        q(torch.randn(2, 16, q.dim))
    assert all(torch.equal(before[k], v) for k, v in q.state_dict().items())


def check_defaults_use_more_than_one_code_per_level(name: str) -> None:
    """A quantizer built with its defaults must not collapse on its first steps (issue: silent codebook collapse)."""
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": name})
    side = 16  # a 16x16 grid fits every default, multi-scale ones included
    proj = torch.nn.Linear(4, q.dim)  # a small trainable "encoder" over varied inputs
    params = [*proj.parameters(), *(p for p in q.parameters() if p.requires_grad)]
    opt = torch.optim.Adam(params, lr=1e-3)
    q.train()
    for _ in range(5):
        latents = proj(torch.randn(4, side * side, 4) * torch.rand(4, 1, 1) * 3)
        out = q(latents)
        loss = (out.z_q - latents.detach()).pow(2).mean() + sum(out.losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    q.eval()
    with torch.no_grad():
        ids = q.quantize_ids(proj(torch.randn(4, side * side, 4) * 2))
    for level in range(ids.shape[-1]):
        assert len(torch.unique(ids[..., level])) > 1, f"{name}: level {level} uses one code"


@pytest.mark.parametrize("name,options", list(cases()))
def test_lookup_inverts_forward(name, options):
    check_lookup_inverts_forward(name, options)


@pytest.mark.parametrize("name,options", list(cases()))
def test_gradients_reach_the_encoder_side(name, options):
    check_gradients_reach_the_encoder_side(name, options)


def test_quantizes_in_float32_under_autocast():
    q = build_component("quantizer", {"name": "vq", "dim": 8, "codebook_size": 32}).eval()
    x = torch.randn(2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(x.bfloat16())
    assert out.z_q.dtype == torch.float32


def test_lean_search_matches_library_on_a_large_codebook():
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": "vq", "dim": 8, "codebook_size": 4096}).eval()
    x = torch.randn(2, 300, 8)
    assert torch.equal(q.quantize_ids(x, chunk=128), q(x).ids)


# rvq's and dual_rvq's defaults (k-means over 16384 codes of dim 256 a level) take ~30 s each on 2 cores.
HEAVY_DEFAULTS = {"rvq", "dual_rvq"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY_DEFAULTS else n for n in names("quantizer")]
)
def test_defaults_use_more_than_one_code_per_level_after_a_few_steps(name):
    check_defaults_use_more_than_one_code_per_level(name)


@pytest.mark.parametrize("name,options", list(cases()))
def test_evaluation_changes_no_state(name, options):
    check_evaluation_changes_no_state(name, options)


@pytest.mark.parametrize("name", ["vq", "rvq"])
@pytest.mark.parametrize("batch", [4, 256])
def test_dead_code_threshold_is_a_share_of_the_mean_use_at_any_batch(name, batch):
    """The restart threshold follows vectors per step / K, so batch 4 does not restart every code every step."""
    q = build_component("quantizer", {"name": name, "dim": 8, "codebook_size": 1024, "dead_code_share": 0.5}).train()
    q(torch.randn(batch, 16, 8))
    for codebook in vqlib.codebooks(q.vq if name == "vq" else q.rvq):
        assert codebook.threshold_ema_dead_code == pytest.approx(0.5 * batch * 16 / 1024)
        assert codebook.reset_cluster_size == pytest.approx(batch * 16 / 1024)


@pytest.mark.parametrize("name", ["lfq", "bsq"])
def test_lfq_sub_codes_are_the_bits_of_one_code(name):
    """Sub-code g holds bits [g*k, (g+1)*k) of the projection's signs, most significant first; lookup inverts it."""
    torch.manual_seed(0)
    q = build_component("quantizer", {"name": name, "dim": 8, "bits": 8, "groups": 2}).eval()
    assert q.codebook_sizes == (16, 16)
    x = torch.randn(3, 10, 8)
    ids = q(x).ids  # (3, 10, 2)
    signs = (q.lfq.project_in(x) > 0).long()  # (3, 10, 8)
    whole = (signs * 2 ** torch.arange(7, -1, -1)).sum(-1)
    assert torch.equal(ids[..., 0] * 16 + ids[..., 1], whole)
    # The code of a position is its sign pattern (on the sphere for bsq), whichever sub-code carries each bit.
    codes = signs.float() * 2 - 1
    if name == "bsq":
        codes = codes / 2  # each group of 4 signs normalised: norm 1 per group
    torch.testing.assert_close(q.lookup(ids), q.lfq.project_out(codes), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["lfq", "bsq"])
def test_unequal_sub_codes_are_the_same_bits_split_elsewhere(name):
    """sub_codes [6, 12] (Open-MAGVIT2's AR split) carry exactly the 18 bits of the default 9 + 9 split, and the
    same code vectors; only the entropy groups stay 2 x 9."""
    torch.manual_seed(0)
    even = build_component("quantizer", {"name": name}).eval()
    torch.manual_seed(0)
    odd = build_component("quantizer", {"name": name, "sub_codes": [6, 12]}).eval()
    assert odd.codebook_sizes == (64, 4096)
    x = torch.randn(2, 16, 18)
    a, b = even(x).ids, odd(x).ids
    assert torch.equal(a[..., 0] * 512 + a[..., 1], b[..., 0] * 4096 + b[..., 1])
    assert torch.equal(odd.quantize_ids(x), b)
    torch.testing.assert_close(odd.lookup(b), even.lookup(a), rtol=0, atol=0)


def test_lfq_refuses_bits_that_do_not_split_or_groups_too_wide():
    from vtok.errors import VtokError

    with pytest.raises(VtokError, match="equal groups"):
        build_component("quantizer", {"name": "lfq", "dim": 8, "bits": 9, "groups": 2})
    with pytest.raises(VtokError, match="groups"):
        build_component("quantizer", {"name": "lfq", "dim": 18, "bits": 18, "groups": 1})
    with pytest.raises(VtokError, match="sum to 18"):
        build_component("quantizer", {"name": "lfq", "sub_codes": [6, 6]})
    with pytest.raises(VtokError, match="1 to 16 bits"):
        build_component("quantizer", {"name": "lfq", "sub_codes": [1, 17]})


def test_lfq_init_places_each_bit_as_a_threshold_of_one_value():
    """With a projection, init_codes makes the signs a scalar quantizer of each value (more thresholds for the
    wider values): on heavy-tailed values it codes far better than the random hyperplanes it starts with."""
    torch.manual_seed(0)
    x = torch.distributions.Laplace(0.0, 1.0).sample((32, 64, 4)) * torch.tensor([4.0, 2.0, 1.0, 0.5])
    errors = {}
    for init in (False, True):
        torch.manual_seed(0)
        q = build_component("quantizer", {"name": "lfq", "dim": 4, "bits": 10, "groups": 2}, "q").eval()
        if init:
            q.init_codes(x)
            w = q.lfq.project_in.weight
            assert torch.equal((w != 0).sum(1), torch.ones(10, dtype=torch.long))  # one value a bit
            assert (w != 0).sum(0).tolist() == sorted((w != 0).sum(0).tolist(), reverse=True)  # wider: more bits
        with torch.no_grad():
            errors[init] = float((q.lookup(q.quantize_ids(x)) - x).pow(2).mean() / x.var())
    assert errors[True] < 0.15 < 0.5 < errors[False]


def test_open_magvit2_code_is_two_sub_codes_of_nine_bits():
    q = build_component("quantizer", {"name": "lfq"})  # the defaults: 18 bits as 2 x 9
    assert q.codebook_sizes == (512, 512) and 512 * 512 == 2**18


@pytest.mark.parametrize("share", [0.5, 1.0, 2.0])
def test_a_restarted_code_starts_at_the_mean_or_the_threshold_whichever_is_higher(share):
    from vtok.tokenizers.quantizers.upkeep import restart_levels

    threshold, reset = restart_levels(vectors=4096, codebook_size=1024, share=share)  # mean use: 4 a code
    assert threshold == pytest.approx(4 * share) and reset == pytest.approx(4 * max(share, 1.0))
