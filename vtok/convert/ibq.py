"""IBQ's image tokenizers (SEED-Voken: ``imagenet256_{1024,8192,16384,262144}.ckpt``) as vtok grid tokenizers.

The Lightning checkpoint of ``src.IBQ.models.ibqgan.IBQ`` holds taming's VQGAN CNN
(``encoder.*``, ``decoder.*``: the ``conv`` encoder and decoder, names kept; attention at
the levels that carry attention weights, the lowest at 256 px), the 1x1 ``quant_conv`` /
``post_quant_conv`` (names kept), the codebook ``quantize.embedding.weight`` (the ``ibq``
quantizer's ``embedding.weight``, stored as used: no normalisation), the training loss's
``loss.*`` (discriminator, LPIPS) and, as every released IBQ config trains with
``use_ema: True``, an EMA copy of every parameter under ``model_ema.<name without dots>``;
its AR configs load the tokenizer with ``use_ema: True``, i.e. these EMA copies. The EMA
copies are what is converted (the file's marker), unless the source config
(``--config``, e.g. a YAML holding ``use_ema: false``) asks for the raw weights; the
choice is recorded as ``use_ema`` in the converted model's ``source``. Dropped: the other
copy, ``loss.*``, the loss's EMA copies and ``model_ema.decay`` / ``num_updates``.

The quantizer's training values are the released configs' (all four sizes alike):
``beta`` 0.25, quantization loss weight 1.0, entropy loss weight 0.05 at temperature
0.01, sample / batch entropy weights 1.0; they matter only for further training.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.convert.magvit2 import pick_weights
from vtok.convert.registry import source
from vtok.convert.vqgan import _cnn_config, _grid_config

GENERATOR = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")


@source(
    "ibq",
    "IBQ",
    marker="model_ema.quantizeembeddingweight",  # released IBQ files carry EMA copies; taming's files have none
    contains=("taming-vqgan",),  # taming's CNN and codebook names
    takes_config=True,
    config_help="use_ema (optional; EMA or raw weights)",
)
def ibq(state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None) -> tuple[dict, dict]:
    weights, use_ema = pick_weights(state, GENERATOR, source_cfg)
    codes = weights.pop("quantize.embedding.weight")
    mapped = {**weights, "quantizer.embedding.weight": codes.float()}
    enc = _cnn_config(weights, "encoder", "down", "block")
    quantizer = {"name": "ibq", "dim": codes.shape[1], "codebook_size": codes.shape[0], "beta": 0.25,
                 "quant_weight": 1.0, "entropy_weight": 0.05, "entropy_temperature": 0.01,
                 "sample_entropy_weight": 1.0, "batch_entropy_weight": 1.0}  # fmt: skip
    cfg = _grid_config(enc, quantizer, mapped)
    cfg["source"] = {"use_ema": use_ema}
    return cfg, mapped
