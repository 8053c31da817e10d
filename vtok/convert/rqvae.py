"""RQ-VAE stage 1 (kakaobrain/rq-vae-transformer, ``stage1/model.pt``) as a vtok grid tokenizer with ``rq_shared``.

The released file is a dict whose ``state_dict`` holds the model (``state_dict_ema``, when
present, is the EMA copy the reference's tools load only on request; read here is
``state_dict``, as its ``compute_rfid.py`` does by default). The CNN has taming's key layout
(``encoder.down.{i}.block/attn``, ``mid.block_1/attn_1/block_2``, ``decoder.up.{i}``, 1x1
``quant_conv`` / ``post_quant_conv``), vtok's ``conv`` parts as they are.

The quantizer is one ``VQEmbedding`` module referenced once per depth, so the file holds
``quantizer.codebooks.{k}.{weight,cluster_size_ema,embed_ema}`` for k < depth, all copies of
level 0's: those of level 0 are used, the others checked equal and dropped. ``weight`` has
one row more than codes: the padding row ``n_embed`` the code search never considers,
dropped. ``cluster_size_ema`` and ``embed_ema`` become ``rq_shared``'s EMA buffers, so
fine-tuning continues the published dynamics.

Not in the weights, so the published defaults unless a config is given (``--config`` with
the run's ``config.yaml``: ``arch.hparams``): EMA decay 0.99, restarts of unused codes on,
commitment weight (``latent_loss_weight``) 0.25. A config whose ``code_shape`` groups several
latent positions into one code (no released model does) is refused.
"""

from __future__ import annotations

from typing import Any

import torch

from vtok.convert.common import count_levels
from vtok.convert.registry import source
from vtok.convert.vqgan import _cnn_config, _grid_config
from vtok.errors import VtokError

PREFIX = "quantizer.codebooks"
BUFFERS = ("weight", "cluster_size_ema", "embed_ema")
# The released ImageNet / LSUN / FFHQ configs' values for what the weights cannot say.
PUBLISHED = {"decay": 0.99, "restart_unused_codes": True, "latent_loss_weight": 0.25}


@source(
    "rq-vae",
    "RQ-VAE",
    marker="quantizer.codebooks.0.",
    contains=("taming-vqgan",),  # taming's CNN layout
    takes_config=True,
    config_help="its stage-1 config.yaml (EMA decay, restarts, latent loss weight) (optional)",
)
def rq_vae(
    state: dict[str, torch.Tensor], source_cfg: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    hps = _hparams(source_cfg)
    depth = count_levels(state, rf"{PREFIX}\.(\d+)\.")
    if depth == 0:
        raise KeyError(f"{PREFIX}.0.weight")
    for level in range(1, depth):
        for name in BUFFERS:
            if not torch.equal(state[f"{PREFIX}.{level}.{name}"], state[f"{PREFIX}.0.{name}"]):
                raise VtokError(
                    f"this RQ-VAE has a separate codebook per depth ({PREFIX}.{level}.{name} differs from level 0's);"
                    " vtok's rq_shared holds the one shared codebook of the released models"
                )
    weight = state[f"{PREFIX}.0.weight"]
    codes = weight[:-1]  # the last row is nn.Embedding's padding_idx, never searched
    if state[f"{PREFIX}.0.embed_ema"].shape != codes.shape:
        raise VtokError(f"{PREFIX}.0.embed_ema has shape {tuple(state[f'{PREFIX}.0.embed_ema'].shape)}, "
                        f"the codebook {tuple(codes.shape)}")  # fmt: skip
    mapped = {k: v for k, v in state.items() if not k.startswith(f"{PREFIX}.")}
    mapped["quantizer.codebook"] = codes.float().clone()
    mapped["quantizer.cluster_size_ema"] = state[f"{PREFIX}.0.cluster_size_ema"].float()
    mapped["quantizer.embed_ema"] = state[f"{PREFIX}.0.embed_ema"].float()
    enc = _cnn_config(state, "encoder", "down", "block")
    if state["quant_conv.weight"].shape[-1] != 1:
        raise VtokError("RQ-VAE's quant_conv is 1x1; this file's is not (another family?)")
    quantizer = {
        "name": "rq_shared",
        "dim": codes.shape[1],
        "depth": depth,
        "codebook_size": codes.shape[0],
        "decay": float(hps["decay"]),
        "restart_unused_codes": bool(hps["restart_unused_codes"]),
        "commitment_weight": float(hps["latent_loss_weight"]),
    }
    return _grid_config(enc, quantizer, mapped), mapped


def _hparams(source_cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The training hparams the weights do not carry: the config's ``arch.hparams`` over the published values."""
    if not source_cfg:
        return dict(PUBLISHED)
    hps = (source_cfg.get("arch") or source_cfg).get("hparams") or {}
    if hps.get("shared_codebook") is False:
        raise VtokError("this RQ-VAE config has shared_codebook: false; vtok's rq_shared holds one shared codebook")
    latent, code = hps.get("latent_shape"), hps.get("code_shape")
    if latent and code and list(latent[:2]) != list(code[:2]):
        raise VtokError(f"code_shape {code} groups latent positions ({latent}); vtok quantizes one code a position")
    if isinstance(hps.get("decay"), list) or isinstance(hps.get("n_embed"), list):
        raise VtokError("per-depth decay or n_embed lists need separate codebooks; rq_shared holds one")
    # The reference's own default (augment_arch_defaults) turns restarts off when a config does not name them.
    return {**PUBLISHED, "restart_unused_codes": False, **{k: hps[k] for k in PUBLISHED if k in hps}}
