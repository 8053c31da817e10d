"""Every registered part of every kind, built small, runs forward and backward (timm's test_models habit).

The parts are discovered from the registry, so a part registered later is tested with no edit here. Each part is
built from its own config defaults with the fields of :data:`TINY_KIND` (per kind, where the part has such a field)
and :data:`TINY` (per kind and name) replacing them; nested components shrink the same way. A part that is still
larger than :data:`MAX_PARAMS` fails, naming the table to add it to.

A gradient must reach every trainable parameter from one forward. A parameter that legitimately gets none is
declared by its part, never skipped here: ``requires_grad=False`` (frozen networks, EMA codebooks), or a class
attribute ``no_grad_parameters = {name: why}`` for one the part trains in another step.
Parts whose weights are not here offline (a timm teacher, some metrics) are skipped with their one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from PIL import Image
from torch import nn

from tests.registry_tiny import MAX_PARAMS, SIZE, TINY, TINY_KIND, tiny_spec
from vtok import registry
from vtok.config import build_component
from vtok.errors import VtokError
from vtok.interfaces import Tokenizer, TokenizerOutput
from vtok.tokens import Tokens


def build_tiny(kind: str, name: str) -> Any:
    """The part at test size; a skip with the part's one-line reason where its weights are not here offline."""
    from vtok.eval.metric import MetricUnavailable

    spec = tiny_spec(kind, name)
    if issubclass(registry.lookup(kind, name), nn.Module):  # sized on the meta device first: a big part fails fast
        try:
            with torch.device("meta"):
                _check_size(kind, name, build_component(kind, spec, f"{kind}.{name}"))
        except (VtokError, RuntimeError, NotImplementedError):
            pass  # a part that cannot be built without real tensors is sized after its real build
    try:
        part = build_component(kind, spec, f"{kind}.{name}")
    except VtokError as err:
        if isinstance(err, MetricUnavailable) or _offline_unavailable(str(err)):
            pytest.skip(f"{kind} {name}: {err}")
        raise
    _check_size(kind, name, part)
    return part


def _check_size(kind: str, name: str, part: Any) -> None:
    count = sum(p.numel() for p in _parameters(part) if p.requires_grad)
    assert count <= MAX_PARAMS, (
        f"{kind} {name!r} trains {count:,} parameters at test size; give it a tiny config in TINY "
        "(tests/test_registry.py)"
    )


def _offline_unavailable(message: str) -> bool:
    """A part's one-line reason for not building here: its pretrained weights or its backend are absent."""
    return "weights" in message or "not installed" in message


def _parameters(part: Any, depth: int = 4) -> list[nn.Parameter]:
    """The torch parameters a part holds, also inside plain objects (a metric keeps its network in a feature
    extractor, which keeps it in a wrapper)."""
    if isinstance(part, nn.Module):
        return list(part.parameters())
    if depth == 0 or isinstance(part, str | bytes | int | float | bool | torch.Tensor) or part is None:
        return []
    if isinstance(part, dict):
        children = list(part.values())
    elif isinstance(part, list | tuple | set):
        children = list(part)
    else:
        children = list(getattr(part, "__dict__", {}).values())
    return [p for child in children for p in _parameters(child, depth - 1)]


def images(seed: int = 0, size: int = SIZE) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, size, size, generator=g) * 2 - 1


def check_gradients(part: nn.Module, where: str) -> None:
    """Every trainable parameter got a finite gradient, except those its modules declare (``no_grad_parameters``)."""
    declared = {
        f"{prefix}.{n}" if prefix else n
        for prefix, module in part.named_modules()
        for n in getattr(module, "no_grad_parameters", {})
    }
    names = dict(part.named_parameters())
    assert declared <= set(names), f"{where}: no_grad_parameters names {sorted(declared - set(names))}"
    missing = [n for n, p in part.named_parameters() if p.requires_grad and p.grad is None and n not in declared]
    assert not missing, f"{where}: no gradient reaches {missing[:8]} (declare it on the part if that is intended)"
    bad = [n for n, p in part.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"{where}: non-finite gradients in {bad[:8]}"


# --- how each kind runs: forward, backward, and the kind's own contract ---------------------------------------


def run_encoder(enc: nn.Module) -> None:
    x = images()
    z = enc(x)
    if enc.num_latent_tokens is None:  # a grid (B, C, H/f, W/f)
        f = enc.downsample_factor
        assert z.shape == (2, enc.out_channels, SIZE // f, SIZE // f)
    else:  # a sequence (B, N, C)
        assert z.shape == (2, enc.num_latent_tokens, enc.out_channels)
    z.float().square().mean().backward()


def run_decoder(dec: nn.Module) -> None:
    x = images()
    if hasattr(dec, "mask_token"):  # 1D: positions past each length filled with the mask token, as the model does
        n = dec.cfg.num_latent_tokens
        lengths = torch.tensor([n, n // 2])
        z = torch.randn(2, n, dec.in_channels)
        keep = torch.arange(n)[None, :, None] < lengths[:, None, None]
        z = torch.where(keep, z, dec.mask_token)
        if dec.inference_only:  # converted weights only: it decodes, and refuses training in one line
            with pytest.raises(VtokError, match="does not train"):
                dec.training_recon(z, lengths, x)
            with torch.no_grad():
                assert dec(z, lengths).shape[:2] == (2, 3)
            pytest.skip(f"{dec.registry_name}: {dec.inference_only} (its decode ran)")
        out = dec.training_recon(z, lengths, x)  # (B, 3, H, W): what the loss sees in training
    else:
        out = dec(torch.randn(2, dec.in_channels, 8, 8))  # (B, 3, 8f, 8f)
    assert out.shape[:2] == (2, 3)
    target = torch.nn.functional.interpolate(x, size=out.shape[-2:], mode="area")  # decoders upsample by their own f
    (out.float() - target).square().mean().backward()


def run_semantic_decoder(dec: nn.Module) -> None:
    side = dec.grid  # a semantic decoder reads a fixed token grid
    out = dec(torch.randn(2, dec.in_channels, side, side))  # (B, C_out, side, side): features for understanding
    assert out.shape == (2, dec.out_channels, side, side)
    out.float().square().mean().backward()


def run_quantizer(q: nn.Module) -> None:
    h, w = q.token_scales[-1] if q.token_scales else (4, 4)
    z = torch.randn(2, h * w, q.dim, requires_grad=True)
    out = q(z)  # training pass
    positions = q.token_positions(h * w)
    assert out.z_q.shape == z.shape and out.ids.shape == (2, positions, len(q.codebook_sizes))
    loss = out.z_q.float().square().mean() + sum(out.losses.values(), torch.zeros(()))
    loss.backward()
    assert z.grad is not None, "no gradient reaches the latents (straight-through estimator missing)"
    q.eval()
    with torch.no_grad():
        out = q(z)
        assert torch.equal(q.quantize_ids(z), out.ids)
        assert torch.allclose(q.lookup(out.ids), out.z_q.float(), atol=1e-5), "lookup is not the inverse of the ids"
        sizes = torch.tensor(q.codebook_sizes)
        assert bool(((out.ids >= 0) & (out.ids < sizes)).all())


def run_model(model: nn.Module) -> None:
    from vtok.ar_models.gpt import GPT

    if isinstance(model, Tokenizer):
        return run_tokenizer(model)
    if isinstance(model, GPT):
        return run_gpt(model)
    raise AssertionError(f"no test runs model {type(model).__name__}: add its runner in tests/test_registry.py")


def run_tokenizer(tok: Tokenizer) -> None:
    x = images()
    tok.init_from_data(x)
    out = tok(x)
    assert isinstance(out, TokenizerOutput) and out.recon.shape == x.shape
    loss = (out.recon.float() - x).square().mean() + sum(out.losses.values(), torch.zeros(()))
    loss.backward()
    tok.eval()
    with torch.no_grad():
        tokens = tok.encode(x)
        tokens.check_range()
        assert tok.decode(tokens).shape == x.shape
        assert tok.lookup(tokens).shape[:2] == tokens.ids.shape[:2]


def run_gpt(model: nn.Module) -> None:
    from vtok.ar_models.sample import SamplingConfig, generate

    g = torch.Generator().manual_seed(0)
    ids = torch.stack([torch.randint(0, k, (2, model.positions), generator=g) for k in model.cfg.codebook_sizes], -1)
    loss, logits = model(ids, torch.tensor([0, 1]))
    assert logits.shape[:2] == (2, model.positions) and torch.isfinite(loss)
    loss.backward()
    tokens = generate(model, torch.tensor([0, 1]), sampling=SamplingConfig(seed=0))
    model.check_tokens(tokens)
    tokens.check_range()


def run_loss(loss: nn.Module) -> None:
    x = images()
    recon = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    tokens = Tokens(torch.zeros(2, 4, 1, dtype=torch.long), (8,), (2, 2))
    out = TokenizerOutput(recon=recon, tokens=tokens, losses={"commit": recon.square().mean()})
    disc = loss.discriminator
    g, logs = loss.generator_loss(x, out, step=10**6, last_layer=torch.zeros(1), discriminator=disc)
    d, d_logs = loss.discriminator_loss(x, recon, disc)
    assert torch.isfinite(g) and torch.isfinite(d) and "total" in logs and "d" in d_logs
    (g + d).backward()
    assert recon.grad is not None


def run_discriminator(disc: nn.Module) -> None:
    logits = disc(images())
    assert logits.shape[0] == 2
    logits.float().mean().backward()


def run_perceptual(p: nn.Module) -> None:
    a = images(0).requires_grad_(True)
    d = p(a, images(1))
    assert d.shape == (2,) and torch.isfinite(d).all()
    d.sum().backward()
    assert a.grad is not None, "a perceptual loss must pass gradients to the reconstruction"


def run_regularizer(reg: nn.Module) -> None:
    host = nn.Module()
    host.encoder = nn.Conv2d(3, 8, 4, stride=4)
    reg.attach(host)
    x = images()
    host.encoder(x)  # the training pass the hook reads
    loss, logs = reg(x)
    assert torch.isfinite(loss) and logs
    loss.backward()
    check_gradients(host, "the regularised module")


def run_teacher(teacher: nn.Module) -> None:
    feats = teacher(images())
    assert feats.dim() == 4 and feats.shape[:2] == (2, teacher.channels)
    assert not feats.requires_grad  # a frozen network: the tokenizer learns its features, never the reverse


def run_ordering(order: nn.Module) -> None:
    lengths = order.sample_lengths(2, 8, torch.device("cpu"))
    assert lengths.shape == (2,) and bool(((lengths >= 1) & (lengths <= 8)).all())
    z = torch.randn(2, 8, 4, requires_grad=True)
    filled = order.fill(z, torch.tensor([8, 3]), torch.zeros(4, requires_grad=True))
    assert filled.shape == z.shape and torch.equal(filled[1, :3], z[1, :3])
    filled.sum().backward()
    assert z.grad is not None


def run_halting(head: nn.Module) -> None:
    n = 8
    features = torch.randn(2, n, head.cfg.in_channels)
    lengths = head.lengths(features, torch.tensor([15.0, 25.0]))
    assert lengths.shape == (2,) and bool(((lengths >= 1) & (lengths <= n)).all())

    def decode(drawn: torch.Tensor) -> torch.Tensor:  # a stand-in decoder: longer prefixes come closer
        x = images(0)[:, None]  # (2, 1, 3, H, W)
        return (x + images(1)[:, None] / drawn[..., None, None, None]).clamp(-1, 1)

    head.loss(features, images(0), decode).backward()


def run_pixel_head(head: nn.Module) -> None:
    grid = 4
    out = head(torch.randn(2, grid * grid, head.cfg.width), grid)
    assert out.shape == (2, 3, grid * head.upsample_factor, grid * head.upsample_factor)
    out.float().square().mean().backward()


def run_metric(metric: Any) -> None:
    metric.reset()
    real = images(0)
    metric.update(real, (real + 0.2 * images(1)).clamp(-1, 1))
    values = metric.compute()
    assert values and all(isinstance(v, float) for v in values.values())
    assert metric.protocol()


def run_face_embedder(embedder: Any) -> None:
    from vtok.eval.annotations import Face

    face = Face(kps=[(20, 24), (44, 24), (32, 34), (24, 44), (40, 44)], box=(8, 8, 56, 60), ratio=0.5)
    image = Image.fromarray((images(0, 64)[0].permute(1, 2, 0).add(1).mul(127.5)).byte().numpy())
    value = embedder.compare(image, image, face)
    assert isinstance(value, float)


def run_recognizer(recognizer: Any) -> None:
    crop = Image.new("RGB", (64, 24), "white")
    words = recognizer([crop, crop])
    assert len(words) == 2 and all(isinstance(w, str) for w in words)


def run_page_reader(reader: Any) -> None:
    text = reader(Image.new("RGB", (64, 32), "white"))
    assert isinstance(text, str)


RUNNERS: dict[str, Callable[[Any], None]] = {
    "encoder": run_encoder,
    "decoder": run_decoder,
    "semantic_decoder": run_semantic_decoder,
    "quantizer": run_quantizer,
    "model": run_model,
    "loss": run_loss,
    "discriminator": run_discriminator,
    "perceptual": run_perceptual,
    "regularizer": run_regularizer,
    "teacher": run_teacher,
    "ordering": run_ordering,
    "pixel_head": run_pixel_head,
    "halting": run_halting,
    "metric": run_metric,
    "face_embedder": run_face_embedder,
    "recognizer": run_recognizer,
    "page_reader": run_page_reader,
}


# Parts whose one run takes many seconds whatever their size: marked slow, so `make test-fast` leaves them out.
SLOW = {("metric", "rfid"): "the Frechet distance of 2048-d Inception features (a 2048x2048 sqrtm): ~50 s on 2 cores"}


def every_part() -> list[tuple[str, str]]:
    """Every registered part built from a config (trainers take a run, not a config, and are not parts)."""
    return [
        (kind, name)
        for kind in registry.kinds()
        for name in registry.names(kind)
        if hasattr(registry.lookup(kind, name), "Config")
    ]


def _params() -> list:
    marks = {part: pytest.mark.slow for part in SLOW}
    return [pytest.param(k, n, id=f"{k}-{n}", marks=marks.get((k, n), ())) for k, n in every_part()]


@pytest.mark.parametrize("kind,name", _params())
def test_every_part_runs_forward_and_backward(kind: str, name: str):
    assert kind in RUNNERS, f"registry kind {kind!r} has no runner: add one to RUNNERS in tests/test_registry.py"
    torch.manual_seed(0)
    part = build_tiny(kind, name)
    if isinstance(part, nn.Module):
        part.train()
        RUNNERS[kind](part)
        check_gradients(part, f"{kind} {name}")
    else:  # a measuring instrument, not trained: it runs, and holds no trainable weight
        RUNNERS[kind](part)
        assert not any(p.requires_grad for p in _parameters(part)), f"{kind} {name} holds trainable parameters"


def test_tiny_tables_name_registered_parts():
    """A renamed or removed part leaves no dead entry behind."""
    parts = set(every_part())
    assert set(TINY) | set(SLOW) <= parts, sorted(set(TINY) | set(SLOW) - parts)
    assert set(TINY_KIND) <= {k for k, _ in parts}
    assert set(RUNNERS) >= {k for k, _ in parts}
