"""Open-MAGVIT2's image tokenizer (``imagenet_256_L.ckpt``, ``imagenet_128_L.ckpt``) as a vtok grid tokenizer.

The Lightning checkpoint holds ``encoder.*`` and ``decoder.*`` in the layout of the
``magvit2`` encoder and decoder parts (names kept), the training loss's ``loss.*``
(discriminator, LPIPS), and with ``use_ema`` an EMA copy of every parameter under
``model_ema.<name without dots>``. Which copy is converted is the option ``use_ema``
of the source config (``--config``), read where Open-MAGVIT2's own YAML puts it: its
tokenizer configs say ``use_ema: True`` (its evaluation uses the EMA weights), its AR
configs load the tokenizer with ``use_ema: False``, so their AR models were trained on
the raw weights' tokens; give that AR config (or a YAML holding ``use_ema: false``) to
convert the tokens they saw. Without a config: the EMA copy when the file has one. The
choice is recorded as ``use_ema`` in the converted model's ``source`` (config.json).
The other copy, ``loss.*`` and the EMA of the loss and ``model_ema.decay`` /
``num_updates`` are dropped.

The quantizer is lookup-free with no parameters: ``lfq`` with as many bits as the
encoder's output channels (18: 2^18 implicit codes), split into 2 sub-codes: 9 + 9 (the
tokenizer's own ``factorized_bits`` default), or the ``factorized_bits`` of an Open-MAGVIT2
config given with ``--config`` (its AR models' YAML: 6 + 12). Open-MAGVIT2 reads a
sub-code's channels least significant bit first, ``lfq`` most significant first, so
``quant_conv`` reverses the channel order within each sub-code and ``post_quant_conv``
restores it (1x1 permutations: exact in floating point). The sub-codes are then exactly
Open-MAGVIT2's factorised indices (9 + 9: over its channels [0, 9) and [9, 18), and its
full 18-bit index is ``ids[..., 0] + 2**9 * ids[..., 1]``). Entropy and commitment weights are Open-MAGVIT2's
training values (0.1, 0.25); note that its entropy is over all 2^18 codes, ``lfq``'s per
sub-code, which matters only for further training.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.convert.common import count_levels
from vtok.convert.registry import source
from vtok.errors import VtokError

GROUPS = 2


def _cnn(state: dict[str, torch.Tensor], side: str) -> dict[str, Any]:
    """ch, ch_mult, num_res_blocks, z_channels of one side of the CNN, from its weights."""
    levels = "down" if side == "encoder" else "up"
    n = count_levels(state, rf"{side}\.{levels}\.(\d+)\.")
    blocks = count_levels(state, rf"{side}\.{levels}\.0\.block\.(\d+)\.")
    if side == "encoder":
        ch, z = state["encoder.conv_in.weight"].shape[0], state["encoder.conv_out.weight"].shape[0]
    else:
        ch, z = state["decoder.conv_out.weight"].shape[1], state["decoder.conv_in.weight"].shape[1]
    mult = [state[f"{side}.{levels}.{i}.block.{blocks - 1}.conv2.weight"].shape[0] // ch for i in range(n)]
    return {"name": "magvit2", "ch": ch, "ch_mult": mult, "num_res_blocks": blocks, "z_channels": z}


def pick_weights(
    state: dict[str, torch.Tensor], prefixes: tuple[str, ...], source_cfg: dict[str, Any] | None
) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors under ``prefixes``, raw or their EMA copies, and whether the EMA copies were taken.

    ``use_ema`` (anywhere in the source config, the first found) chooses; without it the
    EMA copies are taken when the file has them (LitEma's ``model_ema.<dotless name>``).
    """
    own = {k: v for k, v in state.items() if k.startswith(prefixes)}
    has_ema = any(k.startswith("model_ema.") for k in state)
    use_ema = _find(source_cfg or {}, "use_ema")
    if use_ema is None:
        use_ema = has_ema
    elif not isinstance(use_ema, bool):
        raise VtokError(f"use_ema in the config must be true or false, not {use_ema!r}")
    elif use_ema and not has_ema:
        raise VtokError("the config says use_ema: true but the checkpoint holds no EMA weights (model_ema.*)")
    if not use_ema:
        return own, False
    return {k: state[f"model_ema.{k.replace('.', '')}"] for k in own}, True  # LitEma's dotless names


def _reverse_within(widths: list[int]) -> torch.Tensor:
    """(bits, bits, 1, 1) 1x1-conv weight reversing the channel order inside each slice of ``widths`` channels."""
    ends = torch.tensor(widths).cumsum(0).tolist()
    order = torch.cat([torch.arange(end - 1, end - w - 1, -1) for end, w in zip(ends, widths)])
    return torch.eye(sum(widths))[order][..., None, None]


def _find(cfg: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in a nested config (Open-MAGVIT2's AR YAML nests it twice)."""
    if isinstance(cfg, dict):
        if key in cfg:
            return cfg[key]
        cfg = list(cfg.values())
    for value in cfg if isinstance(cfg, list) else []:
        if (found := _find(value, key)) is not None:
            return found
    return None


@source(
    "open-magvit2",
    "Open-MAGVIT2",
    marker="decoder.adaptive.",
    contains=("taming-vqgan",),  # taming's encoder.down.{i} layout
    takes_config=True,
    config_help="factorized_bits, use_ema (optional; EMA or raw weights)",
)
def open_magvit2(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    enc, dec = _cnn(state, "encoder"), _cnn(state, "decoder")
    bits = enc["z_channels"]
    if bits % GROUPS or dec["z_channels"] != bits:
        raise VtokError(f"Open-MAGVIT2 codes of {bits} bits (decoder reads {dec['z_channels']}) do not split in 2")
    split = [int(b) for b in _find(source_cfg or {}, "factorized_bits") or [bits // GROUPS] * GROUPS]
    if sum(split) != bits:
        raise VtokError(f"factorized_bits {split} in the config do not sum to the checkpoint's {bits} bits")
    mapped, use_ema = pick_weights(state, ("encoder.", "decoder."), source_cfg)
    perm = _reverse_within(split)  # its own inverse
    mapped |= {
        "quant_conv.weight": perm,
        "quant_conv.bias": torch.zeros(bits),
        "post_quant_conv.weight": perm.clone(),
        "post_quant_conv.bias": torch.zeros(bits),
        "quantizer.lfq.mask": 2 ** torch.arange(bits // GROUPS - 1, -1, -1),
    }
    quantizer = {"name": "lfq", "dim": bits, "bits": bits, "groups": GROUPS, "entropy_weight": 0.1,
                 "commitment_weight": 0.25, "sub_codes": split}  # fmt: skip
    cfg = {"name": "grid", "encoder": enc, "quantizer": quantizer, "decoder": dec, "source": {"use_ema": use_ema}}
    return cfg, mapped
