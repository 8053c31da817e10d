"""The one place vtok reaches past vector-quantize-pytorch's documented interface.

Parts use what the library's README documents directly: the constructors of
``VectorQuantize``, ``ResidualVQ``, ``FSQ``, ``LFQ``, ``SimVQ``, ``ResidualLFQ`` and
``ResidualFSQ``, their forward, ``get_output_from_indices`` and ``indices_to_codes``.
vtok also needs what the README does not promise, and every such access is here:

- the codebook modules (``VectorQuantize._codebook``, ``ResidualVQ.layers[i]._codebook``) and
  their state (``initted``, ``embed``, ``embed_avg``, ``cluster_size``, ``threshold_ema_dead_code``,
  ``reset_cluster_size``): batch-relative dead-code restarts and k-means init held back outside
  training (``upkeep.py``), and codes set from data (``vq.py``'s ``init_codes``/``refresh_unused``);
- the k-means of the private module ``vector_quantize_pytorch.vector_quantize_pytorch``;
- the projections around the codes (``project_in``, ``project_out``), the ``codebook`` property,
  and ``ResidualVQ.get_codes_from_indices`` for a prefix of levels without quantize dropout.

Why one module: these names may change in any release without notice. Kept together, a new
library version is checked and fixed in one file, ``tests/test_vqlib.py`` exercises each of
them on real library modules, and :data:`SUPPORTED` (the range ``pyproject.toml`` pins) says
which versions they are known to hold for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import ResidualVQ, VectorQuantize

# The versions this module is tested against: from the one installed when it was written to the next major.
SUPPORTED = ">=1.32,<2"


def codebooks(module: VectorQuantize | ResidualVQ) -> list[nn.Module]:
    """The library's codebook modules (``EuclideanCodebook`` / ``CosineSimCodebook``) of a ``VectorQuantize``
    or every level of a ``ResidualVQ``, each once (a shared codebook is one module)."""
    layers = module.layers if isinstance(module, ResidualVQ) else [module]
    found: dict[int, nn.Module] = {}
    for layer in layers:
        found.setdefault(id(layer._codebook), layer._codebook)
    return list(found.values())


def is_initialised(codebook: nn.Module) -> bool:
    """Whether the codebook's one-time k-means init has run (or was never asked for)."""
    return bool(codebook.initted)


def set_initialised(codebook: nn.Module, done: bool) -> None:
    """Mark the codebook's k-means init as done (the library then skips it) or pending."""
    codebook.initted.fill_(done)


def set_restart_levels(codebook: nn.Module, threshold: float, reset: float) -> None:
    """Restart a code whose EMA count falls under ``threshold``; a restarted code's count starts at ``reset``."""
    codebook.threshold_ema_dead_code = threshold
    codebook.reset_cluster_size = reset


def code_counts(codebook: nn.Module) -> torch.Tensor:
    """(K,) the EMA count of each code of a one-head codebook."""
    return codebook.cluster_size[0]


def set_codes(
    codebook: nn.Module, which: torch.Tensor, values: torch.Tensor, count: float | torch.Tensor | None
) -> None:
    """Codes ``which`` (N,) of a one-head codebook become ``values`` (N, d).

    ``count``: for an EMA codebook, the EMA count the new codes start at; their EMA sums follow, so the next
    update keeps them where they are instead of pulling them back. None for a codebook learned by gradient.
    """
    codebook.embed.data[0, which] = values.to(codebook.embed.dtype)
    if count is not None:
        codebook.cluster_size.data[0, which] = count
        codebook.embed_avg.data[0, which] = values * count


def kmeans(points: torch.Tensor, clusters: int, iterations: int, cosine: bool) -> torch.Tensor:
    """The library's k-means (the one its codebooks init with): points (N, d) -> (clusters, d) centroids."""
    from vector_quantize_pytorch.vector_quantize_pytorch import kmeans as library_kmeans

    centroids, _ = library_kmeans(points[None], clusters, iterations, cosine)  # (1, clusters, d)
    return centroids[0]


def code_matrix(vq: VectorQuantize) -> torch.Tensor:
    """(K, codebook_dim) the codes of a one-head ``VectorQuantize``, in the space after ``project_in``."""
    return vq.codebook


def projections(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(project_in, project_out) of a ``VectorQuantize``, ``ResidualVQ`` or ``LFQ``: the maps between the input
    width and the codes' width; ``nn.Identity`` where the widths agree."""
    return module.project_in, module.project_out


def has_projections(module: nn.Module) -> bool:
    """Whether ``module``'s input is projected before quantization (its width differs from the codes')."""
    return not isinstance(module.project_in, nn.Identity)


def residual_prefix_output(rvq: ResidualVQ, ids: torch.Tensor) -> torch.Tensor:
    """ids (B, L, d), 1 <= d <= levels -> (B, L, dim): the first d levels' codes summed and projected out.

    ``get_output_from_indices`` refuses d < levels unless the module was built with quantize dropout; the
    shorter sum is still well defined, so the levels' codes are gathered here and the first d kept.
    """
    d, depth = ids.shape[-1], len(rvq.layers)
    padded = F.pad(ids, (0, depth - d), value=-1).clamp(min=0)
    codes = rvq.get_codes_from_indices(padded)  # (depth, B, L, d_code)
    return rvq.project_out(codes[:d].sum(0))
