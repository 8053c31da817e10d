"""GigaTok's released 1D tokenizers (S-S, S-B, B-L, B-L dino-disc, XL-XXL; ``VQVitModelPlus``) as vtok ``oned``
tokenizers with the ``gigatok`` encoder and decoder and the ``vq_learned_rotation`` quantizer (``vq_learned`` where the
source config sets ``rot: false``; the two differ only in training gradients); ``--from gigatok-2d``: its 2D
tokenizers (``VQVitModel2DPlus``, S-S / S-B / B-L 2D) as ``grid`` tokenizers with ``gigatok2d`` parts.

Source layout (the published code's ``state_dict``, under ``ema`` or ``model`` of the
training checkpoint): the CNN encoder ``encoder.{conv_in, conv_blocks.{i}.{res.{j},
downsample.conv}, mid.{0,1}, norm_out, conv_out}``; the encoder Q-Former
``s2to1encoder.{ln_pre, encoder_embed, positional_embedding, latent_token_positional_embedding,
global_proj, transformer.{i}.{self_attn, multihead_attn, linear1, linear2, norm1..3},
ln_post, conv_out}``; ``quant_conv``; ``quantize.embedding.weight`` (l2-normalised at use);
``post_quant_conv``; the decoder Q-Former ``s1to2decoder.*`` (``decoder_embed``, the same
layers, ``conv_out`` a 3x3 conv); the CNN decoder ``decoder.{conv_in, mid.{0,1},
adaptive.{i}.{gamma, beta}, conv_blocks.{i}.{res.{j}, upsample.conv1}, norm_out, conv_out}``.
vtok's parts keep these names (``encoder.cnn.*``, ``decoder.cnn.*`` for the CNNs), so the
mapping is by prefix; beyond renaming:

- positions are stored (L, 1, D) (sequence first) and become (1, L, D);
- the encoder's 1x1 ``conv_out`` over its fake (1, N) grid and the 1x1 ``quant_conv`` /
  ``post_quant_conv`` are linear maps per token: their weights lose the two unit axes.

Dropped, with the reason:

- ``s1to2decoder.distill_mlp.*``: the MLP that maps decoder features at depth 3 to DINOv2
  features for the semantic-regularisation loss; training only, it is no part of decoding.
- ``quantize.codebook_used``: a training statistic (the last 65536 ids, for the usage log).

Which weights: GigaTok's evaluation loads the checkpoint's ``ema`` entry when there is one, else
``model``; both sources declare that order (``entries``), so a training checkpoint holding both
converts the EMA weights GigaTok evaluates.

The discriminator (PatchGAN or DINO) is saved under its own checkpoint entry, never in the
tokenizer's state dict, so there is nothing of it to drop. Head counts are not in the
weights: GigaTok's sizes fix them by width (tiny 256 .. xxxl 2560), or the source config's
``encoder_size`` / ``decoder_size`` / ``model_size`` name them. Layouts the released models
do not use (learned or RoPE queries, q/k norm, attention in the CNN, residual channel
resampling, LFQ / SimVQ / stochastic quantizers) are refused in one line.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch

from vtok.convert.common import count_levels, rename
from vtok.convert.registry import source
from vtok.errors import VtokError

SIZES = {"tiny": (256, 4), "small": (512, 8), "base": (768, 12), "large": (1024, 16), "xl": (1280, 20),
         "xxl": (1536, 24), "xxxl": (2560, 40)}  # fmt: skip  # GigaTok's model sizes: (width, heads)
HEADS = dict(SIZES.values())
# Options of GigaTok's config that change the network away from the released one: (key, released value).
RELEASED = [("multi_level_query_init", True), ("learnable_1d_query_init", False), ("rope_1d", False),
            ("use_rope", False), ("use_qk_norm", False), ("last_level_2d_query_init", False),
            ("multi_level_2d_query_init", False), ("learnable_2d_query_init", False), ("use_attn", False),
            ("adaptive_gn", True), ("d2s_up", True), ("use_lfq", False), ("simvq", False), ("stochastic", False),
            ("with_prior_model", False), ("downsample_improve", False), ("res_up_down_sample", False),
            ("res_codebook_updown_sample", False), ("encoder_2d_distill", False)]  # fmt: skip
UNSUPPORTED = {"s2to1encoder.query_1d": "learned 1D queries", "s2to1encoder.freqs_cis_1d": "RoPE queries",
               "s1to2decoder.q_2d": "learned 2D queries", "s1to2decoder.upsampler.": "Q-Former upsampling",
               ".q_proj.": "q/k-norm attention", "quantize.codebook_transform": "SimVQ",
               "quant_conv.conv": "residual channel resampling"}  # fmt: skip
CNN_ATTENTION = re.compile(r"(en|de)coder\.(conv_blocks\.\d+\.attn|mid\.2)\.")
DROPPED = ("s1to2decoder.distill_mlp.", "quantize.codebook_used")


def _check_layout(state: dict[str, torch.Tensor], init_args: dict[str, Any]) -> None:
    """One-line errors for GigaTok layouts other than the released tokenizers'."""
    for key, released in RELEASED:
        if key in init_args and bool(init_args[key]) != released:
            raise VtokError(f"GigaTok option {key}: {init_args[key]} is not supported (the released use {released})")
    for key in state:
        if CNN_ATTENTION.match(key):
            raise VtokError("GigaTok CNNs with attention (use_attn: true) are not supported; the released have none")
        for part, what in UNSUPPORTED.items():
            if part in key:
                raise VtokError(f"this GigaTok checkpoint uses {what} ({key}), which the released models do not")
    if "decoder.adaptive.0.gamma.weight" not in state or "decoder.conv_blocks.0.upsample.conv.weight" in state:
        raise VtokError("GigaTok decoders without adaptive group norm and depth-to-space upsampling are not supported")


def _heads(width: int, size: Any, where: str) -> int:
    if size is not None:
        if size not in SIZES:
            raise VtokError(f"{where}: model size {size!r} is not one of GigaTok's ({', '.join(SIZES)})")
        if SIZES[size][0] != width:
            raise VtokError(f"{where}: model size {size!r} has width {SIZES[size][0]}, the weights {width}")
        return SIZES[size][1]
    if width not in HEADS:
        raise VtokError(
            f"{where}: width {width} is not one of GigaTok's sizes; its head count is not in the weights, pass the "
            "source config (--config)"
        )
    return HEADS[width]


def _cnn(state: dict[str, torch.Tensor], side: str, ch: int) -> dict[str, Any]:
    """ch_mult, num_res_blocks, z_channels of one CNN (levels in ch_mult order) from its weights."""
    levels = count_levels(state, rf"{side}\.conv_blocks\.(\d+)\.")
    blocks = count_levels(state, rf"{side}\.conv_blocks\.0\.res\.(\d+)\.")
    widths = [state[f"{side}.conv_blocks.{i}.res.0.conv1.weight"].shape[0] for i in range(levels)]
    if side == "decoder":
        widths, blocks = widths[::-1], blocks - 1  # run from the lowest resolution; num_res_blocks + 1 a level
        z = state["decoder.conv_in.weight"].shape[1]
    else:
        z = state["encoder.conv_out.weight"].shape[0]
    if any(w % ch for w in widths):
        raise VtokError(f"{side} widths {widths} are not multiples of the base width {ch}")
    return {"ch": ch, "ch_mult": [w // ch for w in widths], "num_res_blocks": blocks, "z_channels": z}


def _transformer(state: dict[str, torch.Tensor], part: str, size: Any, factor: int) -> dict[str, Any]:
    """image_size, width, depth, heads, mlp_ratio of one transformer side from its weights."""
    pos = state[f"{part}.positional_embedding"]
    grid = math.isqrt(pos.shape[0])
    if grid * grid != pos.shape[0]:
        raise VtokError(f"{part}.positional_embedding has {pos.shape[0]} rows, not a square grid")
    width = pos.shape[-1]
    return {
        "image_size": grid * factor,
        "width": width,
        "depth": count_levels(state, rf"{part}\.transformer\.(\d+)\."),
        "heads": _heads(width, size, part),
        "mlp_ratio": state[f"{part}.transformer.0.linear1.weight"].shape[0] / width,
    }


def _init_args(source_config: Any, cls: str) -> dict[str, Any]:
    """The ``model.init_args`` of a GigaTok config (empty without one); one line if it names another model."""
    model_cfg = source_config.get("model") if isinstance(source_config, dict) else None
    model_cfg = model_cfg if isinstance(model_cfg, dict) else {}
    if model_cfg.get("model_cls", cls) != cls:
        raise VtokError(f"GigaTok {model_cfg['model_cls']} is not a {cls} checkpoint; --from gigatok takes the 1D "
                        "VQVitModelPlus, --from gigatok-2d the VQVitModel2DPlus")  # fmt: skip
    args = model_cfg.get("init_args")
    return args if isinstance(args, dict) else {}


def _sides(state: dict[str, torch.Tensor], args: dict[str, Any], parts: tuple[str, str]) -> tuple[dict, dict]:
    """The encoder's and decoder's shapes (CNN + transformer) from the weights, heads from GigaTok's sizes."""
    _check_layout(state, args)
    ch = state["encoder.conv_in.weight"].shape[0]
    enc_cnn, dec_cnn = _cnn(state, "encoder", ch), _cnn(state, "decoder", ch)
    enc_size = args.get("encoder_size") or args.get("model_size")
    dec_size = args.get("decoder_size") or args.get("model_size")
    enc = _transformer(state, parts[0], enc_size, 2 ** (len(enc_cnn["ch_mult"]) - 1))
    dec = _transformer(state, parts[1], dec_size, 2 ** (len(dec_cnn["ch_mult"]) - 1))
    if enc["image_size"] != dec["image_size"]:
        raise VtokError(f"the encoder reads {enc['image_size']} px, the decoder writes {dec['image_size']} px")
    return {**enc_cnn, **enc, "dropout": 0.0}, {**dec_cnn, **dec, "dropout": 0.0}


def _quantizer(codes: torch.Tensor, args: dict[str, Any]) -> dict[str, Any]:
    """GigaTok's VectorQuantizer: l2-normalised codes learned by gradient, the rotation trick with ``rot``."""
    return {
        "name": "vq_learned_rotation" if args.get("rot", True) else "vq_learned",
        "dim": codes.shape[1],
        "codebook_size": codes.shape[0],
        "l2_norm": bool(args.get("codebook_l2_norm", True)),
        "beta": float(args.get("commit_loss_beta", 0.25)),
        "entropy_weight": float(args.get("entropy_loss_ratio", 0.0)),
    }


RULES = [("s2to1encoder.conv_out.", "encoder.proj_out."), ("s2to1encoder.", "encoder."), ("s1to2decoder.", "decoder."),
         ("encoder.", "encoder.cnn."), ("decoder.", "decoder.cnn."), ("quant_conv.", "to_code."),
         ("post_quant_conv.", "from_code."), ("quantize.", "quantizer.")]  # fmt: skip


@source(
    "gigatok",
    "GigaTok",
    marker="s2to1encoder.",
    takes_config=True,
    config_help="the source's YAML (configs/vq/VQ_*256.yaml); optional for the released sizes",
    entries=("ema", "model"),  # GigaTok's evaluation reads the EMA weights first
)
def gigatok(
    state: dict[str, torch.Tensor], source_config: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(vtok config, vtok state dict) of a GigaTok 1D tokenizer checkpoint (see the module docstring)."""
    args = _init_args(source_config, "VQVitModelPlus")
    enc, dec = _sides(state, args, ("s2to1encoder", "s1to2decoder"))
    for side, part in ((enc, "s2to1encoder"), (dec, "s1to2decoder")):
        side["num_latent_tokens"] = state[f"{part}.latent_token_positional_embedding"].shape[0]
    if enc["num_latent_tokens"] != dec["num_latent_tokens"]:
        raise VtokError(f"the encoder writes {enc['num_latent_tokens']} tokens, the decoder {dec['num_latent_tokens']}")
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(DROPPED):
            continue
        if key.endswith(("positional_embedding", "latent_token_positional_embedding")):
            value = value.permute(1, 0, 2)  # (L, 1, D) -> (1, L, D)
        elif key.startswith(("s2to1encoder.conv_out.weight", "quant_conv.weight", "post_quant_conv.weight")):
            value = value[:, :, 0, 0]  # a 1x1 conv over tokens is a linear map
        mapped[rename(key, RULES)] = value
    cfg = {
        "name": "oned",
        "encoder": {"name": "gigatok", **enc},
        "quantizer": _quantizer(state["quantize.embedding.weight"], args),
        "decoder": {"name": "gigatok", **dec},
        "ordering": {"name": "none"},
    }
    return cfg, mapped


RULES_2D = [("s2dencoder.", "encoder."), ("s2ddecoder.", "decoder."), ("encoder.", "encoder.cnn."),
            ("decoder.", "decoder.cnn."), ("quantize.", "quantizer.")]  # fmt: skip


@source(
    "gigatok-2d",
    "GigaTok 2D",
    marker="s2dencoder.",
    takes_config=True,
    config_help="the source's YAML (configs/vq/VQ_*256_2d.yaml); optional for the released sizes",
    entries=("ema", "model"),  # GigaTok's evaluation reads the EMA weights first
)
def gigatok_2d(
    state: dict[str, torch.Tensor], source_config: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(vtok config, vtok state dict) of a GigaTok 2D tokenizer (``VQVitModel2DPlus``): a ``grid`` tokenizer.

    The layout is the 1D one with ``s2dencoder`` / ``s2ddecoder`` (transformers over the grid cells, no latent
    positions or query projection) in the Q-Formers' places: plain pre-norm layers (``TransformerLayer``:
    ``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2``), or, where the layers carry
    ``multihead_attn`` and ``norm3`` (``TransformerDecoderLayer``, GigaTok's 2D default, the S-S 2D config),
    Q-Former layers reading the grid as their own memory (``qformer_layers``). ``quant_conv`` and
    ``post_quant_conv`` keep their names (a grid tokenizer's 1x1 convs). ``s2ddecoder.distill_mlp.*`` and
    ``quantize.codebook_used`` are dropped as for 1D.
    """
    args = _init_args(source_config, "VQVitModel2DPlus")
    qformer = any(".multihead_attn." in k for k in state)  # TransformerDecoderLayer; TransformerLayer has none
    layer = args.get("transformer_layer_type", "TransformerDecoderLayer" if qformer else "TransformerLayer")
    if layer not in ("TransformerLayer", "TransformerDecoderLayer") or qformer != (layer == "TransformerDecoderLayer"):
        raise VtokError(f"GigaTok 2D layers of type {layer} do not match the weights or are not supported (the "
                        "released 2D tokenizers use TransformerLayer or TransformerDecoderLayer)")  # fmt: skip
    enc, dec = _sides(state, args, ("s2dencoder", "s2ddecoder"))
    mapped = {
        rename(key, RULES_2D): value.permute(1, 0, 2) if key.endswith("positional_embedding") else value
        for key, value in state.items()
        if not key.startswith(("s2ddecoder.distill_mlp.", "quantize.codebook_used"))
    }
    cfg = {
        "name": "grid",
        "encoder": {"name": "gigatok2d", **enc, "qformer_layers": qformer},
        "quantizer": _quantizer(state["quantize.embedding.weight"], args),
        "decoder": {"name": "gigatok2d", **dec, "qformer_layers": qformer},
    }
    return cfg, mapped
