"""Every registered module, built directly from its Config, saves and loads: same class, spec, weights and outputs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import vtok
from vtok import registry
from vtok.config import instantiate, read_yaml, resolve_component
from vtok.errors import VtokError

ROOT = Path(__file__).resolve().parent.parent
TOKENIZERS = sorted((ROOT / "configs" / "tokenizer").glob("*tiny*.yaml"))
VQ_TINY = ROOT / "configs" / "tokenizer" / "vq_tiny.yaml"  # its loss has a perceptual part
GPT_TINY = ROOT / "configs" / "ar" / "gpt_tiny.yaml"
# The semantic regulariser has no tiny preset; its demo's loss section builds quickly (a small projection).
SEMANTIC = ROOT / "configs" / "tokenizer" / "vq_semantic_demo.yaml"
# Quantizers no tiny preset uses, built alone at dim 8.
QUANTIZERS_ALONE = [
    {"name": "simvq", "dim": 8, "codebook_size": 32},
    {"name": "residual_lfq", "dim": 8, "bits": 4, "depth": 2},
    {"name": "residual_fsq", "dim": 8, "levels": [5, 3], "depth": 2},
]


def direct(kind: str, spec: dict[str, Any]) -> nn.Module:
    """``Class(Class.Config(**fields))``: the part built in code, never through build_component."""
    cls = registry.lookup(kind, spec["name"])
    fields = resolve_component(kind, spec, kind)
    torch.manual_seed(0)
    return cls(instantiate(cls.Config, {k: v for k, v in fields.items() if k != "name"})).eval()


def registered(module: Any) -> bool:
    return "registry_name" in type(module).__dict__


def run_tokenizer(model: nn.Module, images: torch.Tensor) -> Any:
    out = model(images)  # the forward pass runs every part's forward (the quantizer's too)
    tokens = model.encode(images)
    return out.recon, out.tokens.ids, tokens.ids, model.decode(tokens)


def run_gpt(model: nn.Module, images: torch.Tensor) -> Any:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.cfg.codebook_sizes[0], (2, 64, 1), generator=g)
    return model(ids, torch.tensor([0, 3]))


def run_loss(loss: nn.Module, images: torch.Tensor) -> Any:
    return loss.discriminator(images), loss.perceptual(images, images.flip(-1))


def roots() -> list[tuple[str, nn.Module, Any]]:
    """(label, a registered module built directly, how to run it on images); parts are found inside them."""
    out = []
    for path in TOKENIZERS:
        spec = vtok.load_config(path)["model"]
        model = direct("model", spec)
        out.append((path.stem, model, run_tokenizer))
        if hasattr(model, "teacher"):  # kept out of the module tree on purpose: a root of its own
            out.append((f"{path.stem}.teacher", model.teacher, lambda m, x: m(x)))
    out.append(("gpt_tiny", direct("model", vtok.load_config(GPT_TINY)["model"]), run_gpt))
    out.append(("vq_tiny.loss", direct("loss", vtok.load_config(VQ_TINY)["loss"]), run_loss))
    latents = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(1))  # (B, L, D)
    for spec in QUANTIZERS_ALONE:
        out.append((spec["name"], direct("quantizer", spec), lambda m, x, z=latents: m(z)))
    regularizer = read_yaml(SEMANTIC)["loss"]["regularizer"]
    out.append(("semantic", direct("regularizer", regularizer), None))
    return out


def capture(root: nn.Module, run: Any, images: torch.Tensor) -> list[tuple[nn.Module, tuple, dict]]:
    """Every registered module inside ``root`` with the inputs it saw first when ``run`` ran (none: not called)."""
    seen: dict[int, tuple[nn.Module, tuple | None, dict | None]] = {}
    hooks = []
    for module in root.modules():
        if registered(module) and id(module) not in seen:
            seen[id(module)] = (module, None, None)

            def keep(m: nn.Module, args: tuple, kwargs: dict) -> None:
                if seen[id(m)][1] is None:
                    seen[id(m)] = (m, args, kwargs)

            hooks.append(module.register_forward_pre_hook(keep, with_kwargs=True))
    if run is not None:
        with torch.no_grad():
            run(root, images)
    for h in hooks:
        h.remove()
    return list(seen.values())


def same(a: Any, b: Any) -> bool:
    """Bit-equal outputs: tensors, dataclasses (QuantizerOutput, Tokens), tuples, lists, dicts, numbers."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def seeded(fn: Any, module: nn.Module) -> Any:
    torch.manual_seed(0)  # a sampling decoder or a dropout ordering draws: the same draws for both
    with torch.no_grad():
        return fn(module)


Probe = Any  # module -> outputs, or None where the module has no forward a tokenizer or loss runs
CASES: list[tuple[str, nn.Module, Probe]] | None = None


def cases() -> list[tuple[str, nn.Module, Probe]]:
    """Every registered module found, once per distinct (kind, spec), with how to run it if it ran."""
    global CASES
    if CASES is None:
        g = torch.Generator().manual_seed(0)
        images = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
        found: dict[str, tuple[str, nn.Module, Probe]] = {}

        def add(label: str, module: nn.Module, probe: Probe) -> None:
            key = f"{module.registry_kind}:{json.dumps(module.spec, sort_keys=True)}"
            if key not in found or (found[key][2] is None and probe is not None):
                found[key] = (f"{label}:{module.registry_kind}:{module.registry_name}", module, probe)

        for label, root, run in roots():
            for module, args, kwargs in capture(root, run, images):
                if module is not root:
                    probe = None if args is None else (lambda m, a=args, k=kwargs: m(*a, **k))
                    add(label, module, probe)
            add(label, root, None if run is None else (lambda m, run=run: run(m, images)))
        CASES = list(found.values())
    return CASES


def test_every_registered_torch_kind_is_covered():
    registry.load_parts()
    kinds = {
        kind for kind, table in registry._REGISTRY.items() if any(issubclass(cls, nn.Module) for cls in table.values())
    }
    covered = {module.registry_kind for _, module, _ in cases()}
    assert kinds - covered == set(), f"kinds without a round-trip case: {sorted(kinds - covered)}"
    # Parts that ran carry their outputs into the comparison, not only their weights.
    ran = {m.registry_kind for _, m, probe in cases() if probe is not None}
    assert ran >= {"model", "encoder", "decoder", "quantizer", "pixel_head", "discriminator", "perceptual", "teacher"}


@pytest.mark.parametrize("index", range(len(cases())), ids=[c[0] for c in cases()])
def test_directly_built_module_round_trips(index, tmp_path):
    name, module, probe = cases()[index]
    cls = type(module)
    # The spec recorded at construction is what build_component resolves for that spec.
    assert module.spec == resolve_component(cls.registry_kind, module.spec, cls.registry_kind)
    with torch.no_grad():  # weights no fresh build could draw: equal after loading only if they were loaded
        for i, p in enumerate(module.parameters()):
            p.add_(0.01 * (i % 16 + 1))  # bounded, so a deep stack's outputs stay finite (NaN equals nothing)
    module.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert config["kind"] == cls.registry_kind and config["model"] == module.spec
    loaded = cls.from_pretrained(tmp_path / "saved")
    assert type(loaded) is cls and loaded.spec == module.spec and not loaded.training
    a, b = module.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert type(vtok.load(tmp_path / "saved")) is cls
    if probe is not None:
        assert same(seeded(probe, module.eval()), seeded(probe, loaded)), name


def test_from_pretrained_of_another_class_fails_in_one_line(tmp_path):
    from vtok.ar_models.gpt import GPT
    from vtok.tokenizers.quantizers.vq import VQ

    VQ(VQ.Config(dim=4, codebook_size=8)).save_pretrained(tmp_path / "vq")
    with pytest.raises(VtokError, match=r"holds the quantizer 'vq', not a GPT") as err:
        GPT.from_pretrained(tmp_path / "vq")
    assert "\n" not in str(err.value)
    with pytest.raises(VtokError, match=r"not a Tokenizer"):
        vtok.Tokenizer.from_pretrained(tmp_path / "vq")
    tok = vtok.build(VQ_TINY)
    tok.save_pretrained(tmp_path / "tok")
    assert type(vtok.Tokenizer.from_pretrained(tmp_path / "tok")) is type(tok)  # an interface takes its subclasses
    with pytest.raises(VtokError, match=r"holds the model 'grid', not a VQ"):
        VQ.from_pretrained(tmp_path / "tok")


def test_a_config_without_kind_is_a_model(tmp_path):
    """Folders written before parts could be saved alone have no reason to say "kind": they hold a model."""
    tok = vtok.build(VQ_TINY)
    tok.save_pretrained(tmp_path / "tok")
    path = tmp_path / "tok" / "config.json"
    config = json.loads(path.read_text())
    assert config["kind"] == "model" and config["model"] == tok.spec  # what older vtok reads
    del config["kind"]
    path.write_text(json.dumps(config))
    assert vtok.load(tmp_path / "tok").fingerprint() == tok.fingerprint()


def test_a_directly_built_part_records_its_checked_config():
    from vtok.tokenizers.quantizers.vq import VQ

    q = VQ(VQ.Config(dim=4, codebook_size=8))
    assert q.spec["name"] == "vq" and q.spec["codebook_size"] == 8 and "decay" in q.spec  # defaults filled in
    with pytest.raises(VtokError, match=r"'quantizer.decay'"):
        VQ(VQ.Config(dim=4, codebook_size=8, decay=1.5))


def test_a_registered_subclass_records_its_own_name():
    from vtok.tokenizers.ordering import NestedDropout, RedundantPad

    assert RedundantPad(RedundantPad.Config()).spec["name"] == "redundant_pad"
    assert NestedDropout(NestedDropout.Config()).spec["name"] == "nested_dropout"
