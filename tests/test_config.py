"""Config resolution: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import pytest

import vtok
from vtok.errors import VtokError

from .conftest import TINY


def test_overrides_change_the_model():
    cfg = vtok.load_config(TINY, ["model.quantizer.codebook_size=128", "train.lr=1e-4"])
    assert cfg["model"]["quantizer"]["codebook_size"] == 128
    assert cfg["train"]["lr"] == pytest.approx(1e-4)
    assert vtok.build(TINY, ["model.quantizer.codebook_size=128"]).codebook_sizes == (128,)


def test_defaults_are_filled_in():
    cfg = vtok.load_config(TINY)
    assert cfg["model"]["quantizer"]["rotation_trick"] is True
    assert cfg["loss"]["perceptual"] == {"name": "effnet_lite0", "stages": [0, 1, 2, 3, 4]}


@pytest.mark.parametrize(
    "override,match",
    [
        (
            "model.quantizer.codebook_sise=5",
            "model.quantizer.codebook_sise.*did you mean 'model.quantizer.codebook_size'",
        ),
        ("model.quantizer.codebook_size=big", "model.quantizer.codebook_size.*integer"),
        ("model.encoder.ch_mult=3", "model.encoder.ch_mult.*list"),
        ("train.mixed_precision=fp8", "train.mixed_precision.*one of"),
        ("model.quantizer.name=nope", "unknown quantizer 'nope'"),
        ("nonsense", "key.subkey=value"),
    ],
)
def test_bad_overrides_name_the_key(override, match):
    with pytest.raises(VtokError, match=match):
        vtok.load_config(TINY, [override])


def test_unknown_key_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: grid, encoder: {name: conv, chh: 3}}\n")
    with pytest.raises(VtokError, match="model.encoder.chh"):
        vtok.build(path)


def test_malformed_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(VtokError, match="not valid YAML"):
        vtok.build(path)


def _config_dataclasses():
    """(dataclass, where) for the preset schema, every registered part's Config and the dataclasses nested in them."""
    import dataclasses
    import typing

    from vtok import registry
    from vtok.ar_models.sample import SamplingConfig
    from vtok.data import DataConfig
    from vtok.presets import RunConfig, TrainConfig

    registry.load_parts()
    todo = [(RunConfig, "run"), (TrainConfig, "train"), (DataConfig, "data"), (SamplingConfig, "sampling")]
    todo += [
        (cls.Config, f"{kind}:{name}")
        for kind, table in registry._REGISTRY.items()
        for name, cls in table.items()
        if hasattr(cls, "Config")  # trainers take a run, not a config
    ]
    seen = set()
    while todo:
        cls, where = todo.pop(0)
        if cls in seen:
            continue
        seen.add(cls)
        yield cls, where
        for name, tp in typing.get_type_hints(cls).items():
            for inner in (tp, *typing.get_args(tp)):
                if dataclasses.is_dataclass(inner):
                    todo.append((inner, f"{where}.{name}"))


def _is_numeric(tp) -> bool:
    """int or float, alone, optional or in (nested) lists and tuples."""
    import typing

    if tp in (int, float):
        return True
    return any(_is_numeric(a) for a in typing.get_args(tp) if a not in (type(None), Ellipsis))


def _list_depth(tp) -> int:
    import typing

    if typing.get_origin(tp) in (list, tuple):
        return 1 + _list_depth(typing.get_args(tp)[0])
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return _list_depth(args[0]) if len(args) == 1 else 0


def test_every_numeric_config_field_declares_a_range():
    """A number enters through YAML, overrides, JSON and the CLI: each one must say which values make sense."""
    import dataclasses
    import typing

    bare = [
        f"{where}.{f.name}"
        for cls, where in _config_dataclasses()
        for f in dataclasses.fields(cls)
        if _is_numeric(typing.get_type_hints(cls)[f.name]) and "range" not in f.metadata
    ]
    assert not bare, f"numeric config fields without ranged(default, Range): {bare}"


def test_the_range_walk_sees_a_bare_field():
    import dataclasses

    @dataclasses.dataclass
    class Probe:
        count: int = 3
        sizes: list[list[int]] | None = None
        name: str = "x"

    fields = {f.name: f for f in dataclasses.fields(Probe)}
    assert _is_numeric(int) and _is_numeric(list[list[int]] | None) and not _is_numeric(str)
    assert "range" not in fields["count"].metadata and _list_depth(list[list[int]] | None) == 2


def _ranged_fields():
    """(dataclass, field) for every ranged field of the presets, every registered part and their nested dataclasses."""
    import dataclasses

    for cls, where in _config_dataclasses():
        for f in dataclasses.fields(cls):
            if "range" in f.metadata:
                yield pytest.param(cls, f, id=f"{where}.{f.name}")


@pytest.mark.parametrize("cls,field", list(_ranged_fields()))
def test_every_ranged_field_refuses_a_value_just_outside_naming_the_key(cls, field):
    """Ranges are declared on the field; resolve() must enforce each one (and NaN) with the key in the message."""
    import typing

    from vtok.config import resolve

    valid = field.metadata["range"]
    bad = (
        valid.low - (0 if valid.low_open else 1)
        if valid.low is not None
        else valid.high + (0 if valid.high_open else 1)
    )
    kind = typing.get_type_hints(cls)[field.name]
    depth = _list_depth(kind)
    for value in [bad, float("nan")] if "float" in str(kind) else [bad]:
        for _ in range(depth):
            value = [value]
        with pytest.raises(VtokError, match=rf"'x\.{field.name}(\[0\])*'.*(must be|finite)"):
            resolve(cls, {field.name: value}, "x")


@pytest.mark.parametrize("word,want", [("no", "no"), ("off", "no"), ("bf16", "bf16"), ("yes", None)])
def test_yaml_bool_words_read_as_the_option_of_that_name(word, want):
    """YAML 1.1 reads a bare `no` as false; `train.mixed_precision=no` must still mean the option "no"."""
    from vtok.config import instantiate
    from vtok.presets import TrainConfig

    if want is None:
        with pytest.raises(vtok.VtokError, match="mixed_precision"):
            vtok.load_config(TINY, [f"train.mixed_precision={word}"])
        return
    cfg = vtok.load_config(TINY, [f"train.mixed_precision={word}"])
    assert instantiate(TrainConfig, cfg["train"]).mixed_precision == want


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
def test_a_part_that_builds_an_empty_layer_is_refused_in_one_line():
    """Widths are ranged, but a combination can still give a layer no weights (the guard behind the ranges)."""
    import dataclasses

    from torch import nn

    from vtok import registry
    from vtok.config import NON_NEGATIVE, build_component, ranged

    @registry.register("test_probe", "empty")
    class Empty(nn.Module):
        @dataclasses.dataclass
        class Config:
            width: int = ranged(0, NON_NEGATIVE)

        def __init__(self, cfg: Config):
            super().__init__()
            self.proj = nn.Linear(cfg.width, 2)

    try:
        with pytest.raises(VtokError, match=r"'probe': builds an empty layer \(proj.weight has shape \(2, 0\)\)"):
            build_component("test_probe", {"name": "empty"}, "probe")
    finally:
        registry._REGISTRY.pop("test_probe")
