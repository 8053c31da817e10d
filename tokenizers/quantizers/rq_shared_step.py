"""``rq_shared`` with one codebook update per step (DualToken's semantic codebook, ``bottleneck_type: rq_ema``).

What differs from :mod:`vtok.tokenizers.quantizers.rq_shared` (RQ-VAE's, and DualToken's pixel codebook):
in training, every level searches the codebook as it was at the start of the step, and the EMA
statistics, the restarts of unused codes and the codebook write happen once, after the last level,
from all levels' residuals together (DualToken's ``RQBottleneck_ema`` caches each level's residuals
and ids and flushes them at the end of ``quantize``). Inference (ids, lookup) is identical.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vtok.registry import register
from vtok.tokenizers.quantizers.rq_shared import SharedResidualQuantizer


@register("quantizer", "rq_shared_step")
class StepSharedResidualQuantizer(SharedResidualQuantizer):
    """``depth`` codes per position from one EMA codebook (K, D), updated once per training step: ids (B, L, depth)."""

    @torch.no_grad()
    def _residual_codes(self, x: torch.Tensor, update: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x: (N, D) -> ids (N, depth) and, per level k, the sum of the first k codes (N, D)."""
        residual = x.clone()
        total = torch.zeros_like(x)
        ids, partial_sums, seen = [], [], []
        for _ in range(self.cfg.depth):
            idx = self.nearest(residual)  # (N,): this step's codebook at every level
            if update:
                seen.append(residual.clone())
            code = F.embedding(idx, self.codebook)  # (N, D)
            residual.sub_(code)
            total.add_(code)
            ids.append(idx)
            partial_sums.append(total.clone())
        if update:  # one EMA step from all levels' residuals (depth * N vectors), then one write
            self._update_stats(torch.cat(seen), torch.cat(ids))
            self._write_codebook()
        return torch.stack(ids, dim=-1), partial_sums
