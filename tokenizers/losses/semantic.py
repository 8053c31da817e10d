"""Semantic regularisation of a tokenizer's features by a frozen pretrained teacher (GigaTok, VA-VAE).

GigaTok (arXiv 2504.08736) aligns an intermediate decoder stage with a frozen
vision model through a small MLP (REPA's cosine): it keeps the latent space of a
growing tokenizer learnable for the AR model. VA-VAE (arXiv 2501.01423) aligns the
latents themselves with two margin terms: a cosine term that stops pulling once a
position is within ``cosine_margin`` of its teacher feature, and a term on the
two images' self-similarity matrices that ignores differences under
``distance_margin``. Both are options of one part here; the weights choose.

The regulariser lives in the training loss, not in the tokenizer: its projection
and teacher are training machinery, so a saved tokenizer has neither. It reads the
features of any module of the tokenizer (``features``, a module path such as
``decoder.blocks`` or ``encoder``) through a forward hook, so every family with an
encoder or decoder can use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from vtok.config import AT_LEAST_1, NON_NEGATIVE, UNIT, build_component, component, ranged
from vtok.errors import VtokError
from vtok.registry import register


def module_channels(module: nn.Module) -> int | None:
    """Channels of a module's output: its ``out_channels``, else the width of its last conv or linear layer."""
    if isinstance(getattr(module, "out_channels", None), int):
        return module.out_channels
    last = None
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            last = m.out_channels
        elif isinstance(m, nn.Linear):
            last = m.out_features
    return last


def _mlp(cin: int, width: int, cout: int, layers: int) -> nn.Sequential:
    if layers == 1:
        return nn.Sequential(nn.Linear(cin, cout))
    mods: list[nn.Module] = [nn.Linear(cin, width), nn.SiLU()]
    for _ in range(layers - 2):
        mods += [nn.Linear(width, width), nn.SiLU()]
    return nn.Sequential(*mods, nn.Linear(width, cout))


@register("regularizer", "semantic")
class SemanticRegularizer(nn.Module):
    """Teacher alignment of the features a tokenizer module outputs.

    Features (B, C, h, w) are compared position by position with the teacher's map resized to (h, w);
    sequences (B, N, C) (1D tokenizers) are compared as their mean over positions with the teacher's
    mean feature. Losses, on the projected features p and teacher features t:

    - ``cosine_weight`` x mean(1 - cos(p, t)): GigaTok / REPA.
    - ``margin_cosine_weight`` x mean(relu(1 - cosine_margin - cos(p, t))): VA-VAE's marginal cosine.
    - ``distance_weight`` x mean(relu(|cos(p_i, p_j) - cos(t_i, t_j)| - distance_margin)) over the pairs of
      positions of each image: VA-VAE's marginal distance-matrix term.
    """

    @dataclass
    class Config:
        # The frozen pretrained network whose features are the target (a teacher part)
        teacher: dict = component("teacher", {"name": "effnet_lite0"})
        # Path of the tokenizer module whose output is aligned (e.g. decoder.conv_in, encoder)
        features: str = "decoder.conv_in"
        channels: int | None = ranged(None, AT_LEAST_1)  # the features' channels where the module does not tell
        proj_layers: int = ranged(3, AT_LEAST_1)  # REPA's 3-layer MLP; 1 is VA-VAE's linear map
        # Hidden width of the projection MLP from the features to the teacher's width (proj_layers > 1)
        proj_width: int = ranged(512, AT_LEAST_1)
        cosine_weight: float = ranged(0.5, NON_NEGATIVE)
        margin_cosine_weight: float = ranged(0.0, NON_NEGATIVE)
        # The marginal cosine term stops pulling once cos(p, t) reaches 1 - cosine_margin
        cosine_margin: float = ranged(0.5, UNIT)
        distance_weight: float = ranged(0.0, NON_NEGATIVE)
        # Differences of self-similarity under this are not penalised by the distance term
        distance_margin: float = ranged(0.25, UNIT)

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        teacher = build_component("teacher", cfg.teacher, "loss.regularizer.teacher")
        object.__setattr__(self, "teacher", teacher)  # frozen, from its source: not trained, not checkpointed
        self.proj: nn.Module | None = None
        self._features: torch.Tensor | None = None

    def attach(self, tokenizer: nn.Module) -> None:
        """Hook the tokenizer module named by ``features`` and build the projection to the teacher's width."""
        try:
            module = tokenizer.get_submodule(self.cfg.features)
        except AttributeError:
            names = ", ".join(n for n, _ in tokenizer.named_children())
            raise VtokError(
                f"loss.regularizer.features: the tokenizer has no module {self.cfg.features!r} (top level: {names})"
            ) from None
        channels = self.cfg.channels or module_channels(module)
        if channels is None:
            raise VtokError(f"loss.regularizer: set channels, {self.cfg.features!r} does not tell its output width")
        self.proj = _mlp(channels, self.cfg.proj_width, self.teacher.channels, self.cfg.proj_layers)
        module.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if module.training:
            self._features = output[0] if isinstance(output, tuple) else output

    def forward(self, images: torch.Tensor, proj: nn.Module | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted loss and its parts for the features the hook kept from this step's training pass.

        Args:
            images: (B, 3, H, W) in [-1, 1], the batch the tokenizer just coded.
            proj: the projection as the trainer prepared it (DDP-wrapped on many GPUs); default ``self.proj``.
        """
        feats, self._features = self._features, None
        if feats is None:
            raise VtokError(f"loss.regularizer: {self.cfg.features!r} did not run in the training pass")
        self.teacher.to(images.device)
        with torch.no_grad():
            target = self.teacher(images).float()  # (B, C_t, h_t, w_t)
        feats = feats.float()
        if feats.dim() == 4:
            target = F.interpolate(target, size=feats.shape[-2:], mode="bilinear", align_corners=False)
            p, t = rearrange(feats, "b c h w -> b (h w) c"), rearrange(target, "b c h w -> b (h w) c")
        else:  # (B, N, C): a sequence without a grid, compared as a whole
            p, t = feats.mean(1, keepdim=True), target.mean((2, 3))[:, None]
        p = (proj or self.proj)(p)  # (B, N, C_t)
        cos = F.cosine_similarity(p, t, dim=-1)  # (B, N)
        c = self.cfg
        loss = c.cosine_weight * (1 - cos).mean()
        logs = {"semantic_cosine": float(cos.detach().mean())}
        if c.margin_cosine_weight > 0:
            loss = loss + c.margin_cosine_weight * F.relu(1 - c.cosine_margin - cos).mean()
        if c.distance_weight > 0 and p.shape[1] > 1:
            pn, tn = F.normalize(p, dim=-1), F.normalize(t, dim=-1)
            gap = (pn @ pn.transpose(1, 2) - tn @ tn.transpose(1, 2)).abs()  # (B, N, N)
            distance = F.relu(gap - c.distance_margin).mean()
            loss = loss + c.distance_weight * distance
            logs["semantic_distance"] = float(distance.detach())
        logs["semantic"] = float(loss.detach())
        return loss, logs
