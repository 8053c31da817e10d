"""Vector quantization through vector-quantize-pytorch's ``VectorQuantize``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from vector_quantize_pytorch import VectorQuantize

from vtok.config import AT_LEAST_1, DECAY, NON_NEGATIVE, POSITIVE, ranged
from vtok.errors import VtokError
from vtok.interfaces import Quantizer, QuantizerOutput
from vtok.registry import register
from vtok.stats import batch_code_stats

from . import vqlib
from .upkeep import init_only_in_training, scale_dead_code_thresholds


def code_entropy_loss(x: torch.Tensor, codes: torch.Tensor, temperature: float) -> torch.Tensor:
    """LlamaGen's entropy loss: (B, L, D) inputs, (K, D) codes -> mean per-sample entropy - entropy of the mean.

    vector-quantize-pytorch has only the batch-entropy (diversity) term; LlamaGen's
    also sharpens each sample's code distribution, so both are here.
    """
    x = rearrange(x, "b l d -> (b l) d")
    distance = (x * x).sum(-1, keepdim=True) - 2 * x @ codes.t() + (codes * codes).sum(-1)  # (N, K)
    log_probs = F.log_softmax(-distance / temperature, dim=-1)
    probs = log_probs.exp()
    sample_entropy = -(probs * log_probs).sum(-1).mean()
    avg = probs.mean(0)
    avg_entropy = -(avg * torch.log(avg + 1e-5)).sum()
    return sample_entropy - avg_entropy


@register("quantizer", "vq")
class VQ(Quantizer):
    """One codebook, one code per position: ids are (B, L, 1).

    Training keeps the library's dynamics (EMA or learnable codebook, k-means
    init, dead-code restart, rotation trick, commitment loss; codebook statistics
    synced across ranks). By default the codebook starts as k-means of the first
    batch and a code is restarted on a batch vector when its EMA use falls under
    ``dead_code_share`` (1.0) of the mean use of a code (``upkeep.py``), so the
    codebook stays in use at any batch size (measured: benchmarks/bench_collapse.py); ``dead_code_threshold > 0`` sets the
    library's absolute count instead. ``cosine`` l2-normalises inputs and codes (LlamaGen,
    ViT-VQGAN). With ``ema: false`` the codebook is learned by gradient: the
    library then lets the commitment term's gradient reach the codebook too, one
    weight for both. Quantization always runs in float32.
    """

    @dataclass
    class Config:
        # Width of the latent vectors it quantizes (the model's quant_conv maps the encoder's output to it)
        dim: int = ranged(8, AT_LEAST_1)
        # Number of codes K: ids lie in [0, K); more codes, finer latents and a larger AR vocabulary
        codebook_size: int = ranged(16384, AT_LEAST_1)
        # Null: codes live in dim; else a linear map to this width before the search and back after (ViT-VQGAN's
        # factorised codes)
        codebook_dim: int | None = ranged(None, AT_LEAST_1)
        cosine: bool = True
        ema: bool = True
        # EMA decay of the codebook's running counts and sums (ema: true); lower follows the encoder faster
        decay: float = ranged(0.99, DECAY)
        # Codes start as k-means centroids of the first batch's latents (the 1D family with a bypass init: k-means++ of
        # many images), not random
        kmeans_init: bool = True
        # Lloyd iterations of that k-means, and of the k-means that places restarted or refreshed codes
        kmeans_iters: int = ranged(10, AT_LEAST_1)
        dead_code_share: float = ranged(1.0, NON_NEGATIVE)
        dead_code_threshold: float = ranged(
            0.0, NON_NEGATIVE
        )  # > 0: the library's absolute EMA count, in place of the share
        # Gradients cross the quantizer by the rotation trick (Fifty et al., 2024), not the straight-through copy
        rotation_trick: bool = True
        # Weight of the commitment loss |x - sg(code)|^2 pulling latents to their codes (reported as q_commit)
        commitment_weight: float = ranged(0.25, NON_NEGATIVE)
        # Weight of LlamaGen's entropy loss (sharp per-latent code choice, spread over the batch); 0: off
        entropy_weight: float = ranged(0.0, NON_NEGATIVE)
        # Softmax temperature over negative squared distances in that entropy loss; lower is sharper
        entropy_temperature: float = ranged(0.01, POSITIVE)

    def __init__(self, cfg: Config):
        super().__init__()
        if cfg.cosine and not cfg.ema:
            raise VtokError(
                "quantizer: vq's cosine codebooks are updated by EMA only; for a cosine codebook learned by "
                "gradient (LlamaGen) use the vq_learned quantizer"
            )
        self.cfg = cfg
        self.dim = cfg.dim
        self.codebook_sizes = (cfg.codebook_size,)
        self.vq = VectorQuantize(
            dim=cfg.dim,
            codebook_size=cfg.codebook_size,
            codebook_dim=cfg.codebook_dim,
            use_cosine_sim=cfg.cosine,
            decay=cfg.decay,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.dead_code_threshold or cfg.dead_code_share,
            rotation_trick=cfg.rotation_trick,
            commitment_weight=cfg.commitment_weight,
            ema_update=cfg.ema,
            learnable_codebook=not cfg.ema,
        )

    def _quantize(self, x: torch.Tensor) -> QuantizerOutput:
        """x: (B, L, D) float32 -> z_q (B, L, D), ids (B, L, 1)."""
        books = vqlib.codebooks(self.vq)
        if self.training and self.cfg.dead_code_threshold <= 0 and self.cfg.dead_code_share > 0:
            scale_dead_code_thresholds(books, x.shape[0] * x.shape[1], self.cfg.codebook_size, self.cfg.dead_code_share)
        with init_only_in_training(books, self.training):
            z_q, ids, commit = self.vq(x)  # (B, L, D), (B, L)
        losses = {"commit": commit.reshape(())}
        if self.training and self.cfg.entropy_weight > 0:
            losses["entropy"] = self.cfg.entropy_weight * self._entropy_loss(x)
        stats = batch_code_stats(ids, self.cfg.codebook_size)
        return QuantizerOutput(z_q=z_q, ids=ids.unsqueeze(-1), losses=losses, stats=stats)

    def _codes_and_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs projected into codebook space and the codebook, both normalised if cosine."""
        x = vqlib.projections(self.vq)[0](x)
        codes = vqlib.code_matrix(self.vq)
        if self.cfg.cosine:
            x, codes = F.normalize(x, dim=-1), F.normalize(codes, dim=-1)
        return x, codes

    def _entropy_loss(self, x: torch.Tensor) -> torch.Tensor:
        x, codes = self._codes_and_inputs(x)
        return code_entropy_loss(x, codes, self.cfg.entropy_temperature)

    def _quantize_ids(self, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Nearest codes without the library's training machinery: same ids, several times faster.

        The library's search builds per-head distance tensors and gathers codes that
        inference does not need; here it is one normalise + matmul + argmax per ``chunk`` vectors.
        """
        x, codes = self._codes_and_inputs(x)
        flat = rearrange(x, "b l d -> (b l) d")
        out = []
        for part in flat.split(chunk):
            if self.cfg.cosine:
                out.append((part @ codes.t()).argmax(-1))
            else:
                # Same expanded form as the library (-(|x|^2 - 2 x.c + |c|^2)), so ties break alike.
                dist = -((part * part).sum(-1, keepdim=True) - 2 * part @ codes.t() + (codes * codes).sum(-1))
                out.append(dist.argmax(-1))
        return rearrange(torch.cat(out), "(b l) -> b l 1", b=x.shape[0])

    @torch.no_grad()
    def refresh_unused(self, latents: torch.Tensor) -> int:
        """Codes none of ``latents`` (B, L, D) picks become k-means centroids of them; used codes stay as they are.

        For fine-tuning on new data: codes the old data used keep their meaning (and their ids), the rest
        start where the new latents are, as a fresh run's k-means init would put them.
        """
        ids = self.quantize_ids(latents).flatten()
        used = torch.zeros(self.cfg.codebook_size, dtype=torch.bool, device=ids.device)
        used[ids] = True
        unused = (~used).nonzero().flatten()
        if len(unused):
            self._set_codes(latents, unused, used, None)
        return len(unused)

    @torch.no_grad()
    def init_codes(self, latents: torch.Tensor) -> None:
        """Every code a k-means centroid of ``latents`` (B, L, D): a fresh run's k-means init from many images
        instead of the library's first batch, seeded with k-means++ (scikit-learn), which the library's random
        seeding falls far behind on heavy-tailed latents (2.3 dB at 1024 codes on the 1D demo's components)."""
        from sklearn.cluster import KMeans

        x, _ = self._codes_and_inputs(latents.float())
        points = rearrange(x, "b l d -> (b l) d").cpu().double().numpy()
        every = torch.arange(self.cfg.codebook_size, device=latents.device)
        if len(points) < self.cfg.codebook_size:  # too few for k-means++: the library's sampled k-means
            self._set_codes(latents, every, None, None)
        else:
            fit = KMeans(n_clusters=self.cfg.codebook_size, n_init=1, max_iter=50, random_state=0).fit(points)
            centroids = torch.from_numpy(fit.cluster_centers_).to(x)
            if self.cfg.cosine:
                centroids = F.normalize(centroids, dim=-1)
            self._set_codes(latents, every, None, centroids[None])
        vqlib.set_initialised(vqlib.codebooks(self.vq)[0], True)

    def _set_codes(
        self, latents: torch.Tensor, which: torch.Tensor, used: torch.Tensor | None, centroids: torch.Tensor | None
    ) -> None:
        x, _ = self._codes_and_inputs(latents.float())
        if centroids is None:
            flat = rearrange(x, "b l d -> (b l) d")
            centroids = vqlib.kmeans(flat, len(which), self.cfg.kmeans_iters, self.cfg.cosine)[None]
        codebook = vqlib.codebooks(self.vq)[0]
        size = None
        if self.cfg.ema:  # the EMA state must agree with the new codes, or the next update pulls them back
            counts = vqlib.code_counts(codebook)
            size = counts[used].mean() if used is not None else x.shape[0] * x.shape[1] / len(which)
        vqlib.set_codes(codebook, which, centroids[0], size)

    def _lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (B, L, 1) -> z_q: (B, L, D)."""
        return self.vq.get_output_from_indices(ids[..., 0])
