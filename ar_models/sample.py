"""Sampling from a :class:`GPT`: KV cache, temperature, top-k, top-p, classifier-free guidance.

Seeded and batched: the same seed, labels and settings give the same tokens, with
or without the cache (tested). Under guidance the conditional and unconditional
halves run in one batch and share every sampled token. A Token-Shuffle model
(``shuffle: s``) draws the s^2 tokens of a window in one step, each from its own logits.

The cached path is one :class:`DecodeStep` per call: a fixed-shape cache and a
tensor position, so ``compile=True`` compiles it once (with CUDA graphs on GPU,
where the launch overhead of a one-token step dominates), and ``precision="bf16"``
runs it under autocast with a bf16 cache; sampling itself stays float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from tqdm.auto import tqdm

from vtok.ar_models.gpt import GPT
from vtok.ar_models.layers import KVCache
from vtok.config import NON_NEGATIVE, POSITIVE, Range, check_ranges, ranged
from vtok.errors import VtokError
from vtok.fast import autocast, check_precision, require_compile
from vtok.tokens import Tokens


@dataclass
class SamplingConfig:
    """How tokens are drawn; the ranges also type ``vtok generate``'s flags."""

    temperature: float = ranged(1.0, POSITIVE)  # greedy decoding is top_k = 1
    top_k: int = ranged(0, NON_NEGATIVE)  # 0: off
    top_p: float = ranged(1.0, Range(0, 1, low_open=True))  # 1.0: off
    cfg_scale: float = ranged(1.0, NON_NEGATIVE)  # 1.0: the conditional model alone; 0: the unconditional one
    cfg_schedule: Literal["constant", "linear"] = "constant"  # linear: 1 -> cfg_scale over the sequence
    seed: int = ranged(0, NON_NEGATIVE)
    use_cache: bool = True

    def __post_init__(self) -> None:
        check_ranges(self, "sampling")


def filter_logits(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """(N, K) logits with everything outside the top-k / nucleus set to -inf."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        remove = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        remove = remove.scatter(-1, order, remove)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


def _guided(logits: torch.Tensor, guided: bool, scale: float) -> torch.Tensor:
    if not guided:
        return logits
    cond, uncond = logits.chunk(2)
    return uncond + scale * (cond - uncond)


def _draw(logits: torch.Tensor, s: SamplingConfig, gen: torch.Generator) -> torch.Tensor:
    logits = filter_logits(logits.float() / max(s.temperature, 1e-6), s.top_k, s.top_p)
    return torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0]  # (B,)


class DecodeStep(nn.Module):
    """``model.step`` with the key/value caches of a batch of ``batch`` sequences as buffers."""

    def __init__(self, model: GPT, batch: int, dtype: torch.dtype, device: torch.device):
        super().__init__()
        self.model = model
        shape = (batch, model.cfg.heads, model.max_steps, model.cfg.dim // model.cfg.heads)
        self.caches = nn.ModuleList(KVCache(shape, dtype, device) for _ in model.layers)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, D) at step ``pos`` (0-dim long) -> (B, D)."""
        return self.model.step(x, pos, list(self.caches))


def decode_step(model: GPT, batch: int, precision: str, compile: bool, device: torch.device) -> DecodeStep:
    """A fresh cached step; compiled once per batch size (CUDA graphs on GPU) when asked."""
    low = check_precision(precision)
    dtype = low if low != torch.float32 else next(model.parameters()).dtype
    step = DecodeStep(model, batch, dtype, device)
    if compile:
        require_compile()
        step.compile(dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)
    return step


@torch.inference_mode()
def generate(
    model: GPT,
    labels: torch.Tensor | None,
    num_samples: int | None = None,
    sampling: SamplingConfig | None = None,
    progress: bool = False,
    precision: str = "fp32",
    compile: bool = False,
) -> Tokens:
    """Sample token sequences.

    Args:
        labels: (B,) class ids, or None for the unconditional model (then ``num_samples``).
        precision: "fp32", or "bf16" (the transformer under autocast, bf16 cache; logits and draws in float32).
        compile: compile the cached decoding step (static shapes; ``sampling.use_cache`` must be on).
    Returns:
        ``Tokens`` in the model's layout; variable-length models set ``lengths``.
    """
    s = sampling or SamplingConfig()
    model.eval()
    device = next(model.parameters()).device
    if labels is None:
        if not num_samples:
            raise VtokError("unconditional sampling needs num_samples")
        labels = torch.full((num_samples,), model.cfg.num_classes, device=device)
    labels = labels.to(device)
    b = labels.shape[0]
    guided = s.cfg_scale != 1.0 and model.cfg.num_classes > 0
    if guided:
        labels = torch.cat([labels, torch.full_like(labels, model.cfg.num_classes)])
    gen = torch.Generator(device=device).manual_seed(s.seed)
    steps = model.max_steps
    prefix = model.class_prefix(labels, labels.shape[0], device)  # (B', 1, D)
    if compile and not s.use_cache:
        raise VtokError("compile speeds up the cached decoding step; sampling without the cache cannot use it")
    step = decode_step(model, labels.shape[0], precision, compile, device) if s.use_cache else None
    # (B, T, G, C): T steps of G positions (G = s^2 under Token-Shuffle: a step draws a whole window)
    ids = torch.zeros(b, steps, model.group, model.codes, dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    lengths = torch.full((b,), model.positions, dtype=torch.long, device=device)
    for t in tqdm(range(steps), desc="sample", disable=not progress):
        with autocast(device, precision):
            if step is not None:
                x = prefix if t == 0 else model.embed_steps(_both(ids[:, t - 1 : t], guided))
                hidden = step(x, torch.tensor(t, device=device)).float()  # (B', D)
            else:
                x = torch.cat([prefix, model.embed_steps(_both(ids[:, :t], guided))], dim=1)
                hidden = model.backbone(x)[:, -1].float()
            states = model.position_hidden(hidden).flatten(0, 1).float()  # (B' G, D), b-major: CFG halves stay halves
        scale = s.cfg_scale if s.cfg_schedule == "constant" else 1 + (s.cfg_scale - 1) * (t + 1) / steps
        if model.codes == 1:
            logits = _guided(model.output(states).float(), guided, scale)  # (B G, K)
            if model.end_id is not None and t == 0:
                logits[:, model.end_id] = float("-inf")  # at least one token per image
            ids[:, t, :, 0] = _draw(logits, s, gen).view(b, model.group)
        else:
            for c in range(model.codes):
                per_code = model.depth_logits(states, _both(ids[:, t], guided).flatten(0, 1))
                logits = _guided(per_code[c].float(), guided, scale)  # (B G, K_c)
                if model.end_id is not None and t == 0 and c == 0:
                    logits[:, model.end_id] = float("-inf")
                ids[:, t, :, c] = _draw(logits, s, gen).view(b, model.group)
        if model.end_id is not None:
            ended = (ids[:, t, 0, 0] == model.end_id) & ~done
            lengths[ended] = t
            done |= ended
            if bool(done.all()):
                break
    ids = model.from_steps(ids)  # (B, L, C)
    if model.end_id is None:
        return model.make_tokens(ids)
    ids = ids[:, : model.positions]
    valid = torch.arange(model.positions, device=device)[None] < lengths[:, None]
    ids = torch.where(valid[..., None], ids, torch.zeros_like(ids))  # past the end: padding, not the end id
    return model.make_tokens(ids, lengths)


def _both(ids: torch.Tensor, guided: bool) -> torch.Tensor:
    return torch.cat([ids, ids]) if guided else ids
