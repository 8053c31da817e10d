"""The adapter over vector-quantize-pytorch's internals: the installed version is one it declares, and each
function still does what vtok relies on, on real library modules."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import torch
from packaging.specifiers import SpecifierSet
from vector_quantize_pytorch import LFQ, ResidualVQ, VectorQuantize

from vtok.tokenizers.quantizers import vqlib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_installed_version_is_in_the_declared_range_which_pyproject_pins():
    supported = SpecifierSet(vqlib.SUPPORTED)
    assert version("vector-quantize-pytorch") in supported
    assert "1.99" in supported and "2.0" not in supported  # the next major release may move any internal
    pinned = re.search(r'"vector-quantize-pytorch([^"]*)"', PYPROJECT.read_text())
    assert pinned is not None and SpecifierSet(pinned.group(1)) == supported


def test_initialised_flag_holds_back_the_library_kmeans_init():
    torch.manual_seed(0)
    vq = VectorQuantize(dim=4, codebook_size=16, kmeans_init=True).eval()
    (codebook,) = vqlib.codebooks(vq)
    assert not vqlib.is_initialised(codebook)
    before = vqlib.code_matrix(vq).clone()
    vqlib.set_initialised(codebook, True)
    vq(torch.randn(2, 32, 4))
    assert torch.equal(vqlib.code_matrix(vq), before)  # the library took the flag: no k-means
    vqlib.set_initialised(codebook, False)
    vq(torch.randn(2, 32, 4) + 5)
    assert vqlib.is_initialised(codebook) and not torch.equal(vqlib.code_matrix(vq), before)


def test_restart_levels_and_set_codes_reach_the_codebook_state():
    torch.manual_seed(0)
    vq = VectorQuantize(dim=4, codebook_size=16, kmeans_init=False, threshold_ema_dead_code=1).train()
    (codebook,) = vqlib.codebooks(vq)
    vqlib.set_restart_levels(codebook, threshold=1e9, reset=7.0)  # every code is dead: all restart
    vq(torch.randn(2, 32, 4))
    assert torch.equal(vqlib.code_counts(codebook), torch.full((16,), 7.0))
    values = torch.randn(2, 4)
    vqlib.set_codes(codebook, torch.tensor([3, 5]), values, count=2.0)
    assert torch.equal(vqlib.code_matrix(vq)[[3, 5]], values)
    assert vqlib.code_counts(codebook)[[3, 5]].tolist() == [2.0, 2.0]
    torch.testing.assert_close(vq.get_output_from_indices(torch.tensor([[3, 5]])), values[None])


def test_residual_codebooks_each_once_and_prefix_output():
    torch.manual_seed(0)
    shared = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, shared_codebook=True)
    separate = ResidualVQ(dim=8, num_quantizers=3, codebook_size=16, kmeans_init=False, quantize_dropout=False)
    assert len(vqlib.codebooks(shared)) == 1 and len(vqlib.codebooks(separate)) == 3
    separate.eval()
    z_q, ids, _ = separate(torch.randn(2, 10, 8))  # (2, 10, 8), (2, 10, 3)
    torch.testing.assert_close(vqlib.residual_prefix_output(separate, ids), z_q)
    first_two = sum(vqlib.code_matrix(layer)[ids[..., k]] for k, layer in enumerate(separate.layers[:2]))
    torch.testing.assert_close(vqlib.residual_prefix_output(separate, ids[..., :2]), first_two)


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    points = (centres[:, None] + 0.1 * torch.randn(3, 50, 2)).reshape(-1, 2)
    found = vqlib.kmeans(points, 3, iterations=20, cosine=False)
    assert found.shape == (3, 2)
    assert torch.cdist(centres, found).min(1).values.max() < 0.2


def test_projections_map_between_input_and_code_widths():
    vq = VectorQuantize(dim=8, codebook_size=16, codebook_dim=4)
    project_in, project_out = vqlib.projections(vq)
    assert vqlib.has_projections(vq) and project_in(torch.randn(3, 8)).shape == (3, 4)
    assert project_out(torch.randn(3, 4)).shape == (3, 8) and vqlib.code_matrix(vq).shape == (16, 4)
    assert vqlib.has_projections(LFQ(dim=8, codebook_size=16)) and not vqlib.has_projections(
        LFQ(dim=4, codebook_size=16)
    )
