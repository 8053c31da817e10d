"""Lookup-free quantization (MAGVIT-v2, Open-MAGVIT2) and its spherical form (BSQ), on vector-quantize-pytorch's ``LFQ``.

A position's latent is projected to ``bits`` channels and each channel is coded by
its sign, so the implicit codebook has 2^bits entries and nothing to learn or
collapse. The bits are split into sub-codes, by default ``groups`` of ``bits / groups``
bits (Open-MAGVIT2's tokenizer: 18 bits as 2 x 9), or as ``sub_codes`` says (its AR
models: 6 + 12): ids are (B, L, C), one column per sub-code, the first channel of a
sub-code its most significant bit. The entropy loss is computed per equal group, which
is what keeps 2^18 codes tractable (a softmax over 2 x 512 entries, not 262144).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange, reduce
from vector_quantize_pytorch import LFQ as LibraryLFQ

from vtok.config import AT_LEAST_1, NON_NEGATIVE, POSITIVE, Range, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats

from . import vqlib

MAX_GROUP_BITS = 16  # the library's per-group entropy is a softmax over 2^(bits/groups) codes per vector


@register("quantizer", "lfq")
class LFQ(Quantizer):
    """Sign bits of a projection: ids (B, L, C), sub-code c the next ``sub_codes[c]`` bits (most significant
    first); by default C = ``groups`` sub-codes of bits / groups bits. ``sub_codes`` sets an unequal split
    for the AR model's heads (Open-MAGVIT2's AR models: 18 bits as 6 + 12); the entropy loss keeps the
    ``groups`` split, which only has to keep each group's softmax small.

    Losses (MAGVIT-v2's, weights as Open-MAGVIT2 trains them): ``entropy`` =
    ``entropy_weight`` x (mean per-sample entropy - ``diversity_gamma`` x entropy of
    the batch-mean distribution), over soft assignments at ``inv_temperature``;
    ``commit`` = ``commitment_weight`` x MSE between the projection and its signs.
    """

    spherical = False

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes; when it differs from bits, a linear map to bits channels and back
        dim: int = ranged(18, AT_LEAST_1)
        bits: int = ranged(18, AT_LEAST_1)  # sign bits per position: 2^bits implicit codes (18: Open-MAGVIT2's 262144)
        # Equal groups the bits split into for the entropy loss (and, without sub_codes, the id columns)
        groups: int = ranged(2, AT_LEAST_1)
        # Weight of the entropy loss: mean per-sample entropy - diversity_gamma x batch entropy; 0: off
        entropy_weight: float = ranged(0.1, NON_NEGATIVE)
        # Weight of the mean squared error between the projection and its signs
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)
        # Weight of the batch-entropy (code diversity) term inside the entropy loss
        diversity_gamma: float = ranged(1.0, NON_NEGATIVE)
        # Inverse temperature of the soft code assignments the entropy loss is computed over
        inv_temperature: float = ranged(100.0, POSITIVE)
        # A random share of the positions for the per-sample entropy, to save memory on large batches.
        per_sample_entropy_share: float = ranged(1.0, Range(0.0, 1.0, low_open=True))
        # Bits of each token sub-code, in order (summing to ``bits``); empty: ``groups`` equal sub-codes.
        sub_codes: list[int] = ranged([], AT_LEAST_1)

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.bits % cfg.groups:
            raise VtokError(f"quantizer: {cfg.bits} bits do not split into {cfg.groups} equal groups")
        group_bits = cfg.bits // cfg.groups
        if group_bits > MAX_GROUP_BITS:
            raise VtokError(
                f"quantizer: {group_bits} bits per group is more than {MAX_GROUP_BITS}; "
                f"raise groups (Open-MAGVIT2 codes 18 bits as 2 groups of 9)"
            )
        sub_codes = list(cfg.sub_codes) or [group_bits] * cfg.groups
        if sum(sub_codes) != cfg.bits or min(sub_codes) < 1 or max(sub_codes) > MAX_GROUP_BITS:
            raise VtokError(
                f"quantizer: sub_codes {sub_codes} must be 1 to {MAX_GROUP_BITS} bits each and sum to {cfg.bits}"
            )
        self.cfg = cfg
        self.dim = cfg.dim
        self.group_bits = group_bits
        self.sub_codes = sub_codes
        self.regroup = sub_codes != [group_bits] * cfg.groups  # ids differ from the library's groups
        self.codebook_sizes = tuple(2**b for b in sub_codes)
        self.lfq = LibraryLFQ(
            dim=cfg.dim,
            codebook_size=2**group_bits,
            num_codebooks=cfg.groups,
            keep_num_codebooks_dim=True,
            entropy_loss_weight=cfg.entropy_weight,
            commitment_loss_weight=cfg.commitment_weight,
            diversity_gamma=cfg.diversity_gamma,
            frac_per_sample_entropy=cfg.per_sample_entropy_share,
            spherical=self.spherical,
        )

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, dim) float32 -> z_q (B, L, dim), ids (B, L, C)."""
        (z_q, ids, _), parts = self.lfq(
            x, inv_temperature=self.cfg.inv_temperature, return_loss_breakdown=True
        )  # (B, L, dim), (B, L, groups)
        losses = {"commit": self.cfg.commitment_weight * parts.commitment}
        if self.training and self.cfg.entropy_weight > 0:
            entropy = parts.per_sample_entropy - self.cfg.diversity_gamma * parts.batch_entropy
            losses["entropy"] = self.cfg.entropy_weight * entropy
        bits = unpack_bits(ids.long(), [self.group_bits] * self.cfg.groups)  # (B, L, bits)
        ids = pack_bits(bits, self.sub_codes) if self.regroup else ids.long()  # (B, L, C)
        stats = batch_code_stats(ids[..., 0], self.codebook_sizes[0])
        ones = reduce(bits.float(), "b l k -> k", "mean")
        # The least balanced bit's share of its rarer value, x 2: 1 when every bit is set half the time, 0 for
        # a bit that never changes (a dead bit carries nothing, however many codes the others reach).
        stats["bit_balance"] = (2 * torch.minimum(ones, 1 - ones)).min()
        return QuantizerOutput(z_q=z_q, ids=ids, losses=losses, stats=stats)

    def _quantize_ids(self, x: torch.Tensor) -> torch.Tensor:
        """The signs of the projection, nothing else (no entropy, no output projection): the same ids."""
        project_in, _ = vqlib.projections(self.lfq)
        return pack_bits((project_in(x) > 0).long(), self.sub_codes)  # (B, L, C)

    @torch.no_grad()
    def init_codes(self, latents: torch.Tensor) -> None:
        """With a projection (``dim`` != ``bits``): each bit a threshold on one input value, so the code starts as
        a scalar quantizer of every value. The bits go to the values in turn, each to the value whose cells are
        widest (variance / (thresholds + 1)^2); a value's thresholds are a Lloyd-Max quantizer's; the output
        projection is the least-squares map from the signs back to the values. The default projection is random
        hyperplanes through the data's mean, which code a few values with many redundant bits.
        Without a projection the signs of the values themselves are the code: nothing to place."""
        if not vqlib.has_projections(self.lfq) or self.spherical:  # the sphere's normalisation mixes the thresholds
            return
        x = rearrange(latents.float(), "b l d -> (b l) d")
        counts = torch.zeros(self.dim, dtype=torch.long)
        spread = x.var(0).cpu()
        for _ in range(self.cfg.bits):
            counts[torch.argmax(spread / (counts + 1) ** 2)] += 1
        rows, offsets = [], []
        for d, k in enumerate(counts.tolist()):
            if k:
                rows += [d] * k
                offsets += _scalar_thresholds(x[:, d], k + 1)
        weight = torch.zeros(self.cfg.bits, self.dim, device=x.device)
        weight[torch.arange(self.cfg.bits), torch.tensor(rows)] = 1.0
        bias = -torch.tensor(offsets, device=x.device)
        project_in, project_out = vqlib.projections(self.lfq)
        project_in.weight.copy_(weight)
        project_in.bias.copy_(bias)
        signs = torch.where(x @ weight.t() + bias > 0, 1.0, -1.0)  # (N, bits)
        design = torch.cat([signs, torch.ones_like(signs[:, :1])], 1)
        solution = torch.linalg.lstsq(design.cpu().double(), x.cpu().double()).solution.to(x)  # (bits + 1, dim)
        project_out.weight.copy_(solution[:-1].t())
        project_out.bias.copy_(solution[-1])

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, C) sub-codes -> (B, L, dim)."""
        if ids.shape[-1] != len(self.sub_codes):
            raise VtokError(
                f"{self.registry_name} ids carry {ids.shape[-1]} sub-codes; this quantizer has {len(self.sub_codes)}"
            )
        if self.regroup:  # the same bits, as the library's equal groups
            ids = pack_bits(unpack_bits(ids, self.sub_codes), [self.group_bits] * self.cfg.groups)
        return self.lfq.indices_to_codes(ids)


@register("quantizer", "bsq")
class BSQ(LFQ):
    """Binary spherical quantization (arXiv 2406.07548): LFQ on the unit sphere.

    Each group's projection is l2-normalised before its signs are taken and the
    codes are the signs over sqrt(bits per group), so every code has norm 1 and the
    quantization error is bounded; losses and ids as ``lfq``.
    """

    spherical = True


def _scalar_thresholds(values: torch.Tensor, levels: int, iterations: int = 30) -> list[float]:
    """The ``levels - 1`` decision thresholds of a Lloyd-Max scalar quantizer of ``values`` (1D k-means from the
    equiprobable quantiles): on heavy-tailed values (image components) equiprobable cells leave the tails'
    cells far too wide. Written here because the 1D case is a few lines of sorting and needs no library."""
    v = values.float()
    centres = torch.quantile(v, (torch.arange(levels, device=v.device) + 0.5) / levels)
    for _ in range(iterations):
        cells = torch.bucketize(v, (centres[1:] + centres[:-1]) / 2)
        sums = torch.zeros_like(centres).index_add_(0, cells, v)
        counts = torch.bincount(cells, minlength=levels).to(v)
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres).sort().values
    return ((centres[1:] + centres[:-1]) / 2).tolist()


def unpack_bits(ids: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """(..., C) ids of ``widths[c]`` bits each -> (..., sum(widths)) bits, each id most significant bit first."""
    return torch.cat(
        [(ids[..., c, None] >> torch.arange(w - 1, -1, -1, device=ids.device)) & 1 for c, w in enumerate(widths)],
        dim=-1,
    )


def pack_bits(bits: torch.Tensor, widths: list[int]) -> torch.Tensor:
    """(..., sum(widths)) bits -> (..., C) ids, id c the next ``widths[c]`` bits, most significant first."""
    out, start = [], 0
    for w in widths:
        weights = 2 ** torch.arange(w - 1, -1, -1, device=bits.device)
        out.append((bits[..., start : start + w] * weights).sum(-1))
        start += w
    return torch.stack(out, dim=-1)
