"""The generated reference pages of the documentation site are complete.

docs/gen_reference.py writes them at every ``make docs``; these checks walk the registry, the preset
schema and the CLI parsers themselves (not the generator's own walk), so a key or flag the generator
skips fails here.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
import sys
import typing
from pathlib import Path

import pytest

from vtok import registry

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("vtok_docs_gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up by name
    spec.loader.exec_module(module)
    return module


def keys(cls: type, prefix: str = "") -> list[str]:
    """Every key of dataclass ``cls``; a nested dataclass (not a registered part) adds its keys as ``field.key``."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if "component" not in f.metadata and dataclasses.is_dataclass(hints[f.name]):
            out += keys(hints[f.name], f"{prefix}{f.name}.")
    return out


def sections(markdown: str) -> dict[str, str]:
    """Heading id -> the text under that heading, up to the next heading of any level."""
    parts = re.split(r"^#{2,3} .*\{#([\w-]+)\}$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def rows(text: str) -> set[str]:
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))


def test_every_key_of_every_registered_part_is_in_the_config_reference(gen):
    page = sections(gen.config_markdown())
    parts = [(kind, name) for kind in registry.kinds() for name in registry.names(kind)]
    checked = 0
    for kind, name in parts:
        cls = registry.lookup(kind, name)
        if not hasattr(cls, "Config"):
            continue
        anchor = f"{kind}-{name}"
        assert anchor in page, f"no section for {kind} {name!r} in the config reference"
        missing = set(keys(cls.Config)) - rows(page[anchor])
        assert not missing, f"{kind} {name!r}: keys missing from the config reference: {sorted(missing)}"
        checked += 1
    assert checked > 50  # every family's parts, not an empty registry


def test_the_preset_sections_are_in_the_config_reference(gen):
    from vtok.data import DataConfig
    from vtok.presets import RunConfig, TrainConfig

    page = sections(gen.config_markdown())
    for section, cls in (("train", TrainConfig), ("data", DataConfig)):
        missing = {f"{section}.{k}" for k in keys(cls)} - rows(page[section])
        assert not missing, f"preset keys missing from the config reference: {sorted(missing)}"
    for f in dataclasses.fields(RunConfig):  # model and loss are parts: their kinds have sections
        assert f.name in page


# Parts whose keys the reference does not explain yet (an empty "what it does" cell): the evaluation metrics and
# the 1D tokenizer model. Every other registered part's keys must each say what they do.
BARE_FOR_NOW = {"metric"}
EXPLAINED = [
    (kind, name)
    for kind in registry.kinds()
    for name in registry.names(kind)
    if kind not in BARE_FOR_NOW
    and f"{kind}/{name}" not in BARE_FOR_NOW
    and hasattr(registry.lookup(kind, name), "Config")
]


@pytest.mark.parametrize("kind,name", EXPLAINED, ids=[f"{k}-{n}" for k, n in EXPLAINED])
def test_every_key_of_a_part_says_what_it_does(gen, kind, name):
    cls = registry.lookup(kind, name)
    bare = [r.key for r in gen.config_rows(cls.Config, owner=cls) if not r.doc.strip()]
    assert not bare, f"{kind} {name!r}: give these keys a comment on the field (the reference shows it): {bare}"


def test_every_train_and_data_key_says_what_it_does(gen):
    from vtok.data import DataConfig
    from vtok.presets import TrainConfig

    for cls in (TrainConfig, DataConfig):
        bare = [r.key for r in gen.config_rows(cls) if not r.doc.strip()]
        assert not bare, f"{cls.__name__}: give these keys a comment on the field: {bare}"


def test_a_key_shows_its_type_default_range_and_documentation(gen):
    page = sections(gen.config_markdown())
    row = next(line for line in page["quantizer-vq"].splitlines() if line.startswith("| `dead_code_share` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:4] == ["`float`", "`1.0`", "at least 0"]
    assert "mean use of a code" in cells[4]


def test_every_command_and_flag_is_in_the_cli_reference(gen):
    from vtok.cli import build_parser

    page = gen.cli_markdown()
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, parser in commands.items():
        assert f"\n## vtok {name}\n" in page, f"vtok {name} is missing from the CLI reference"
        text = page.split(f"\n## vtok {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings or [action.dest]:
                assert f"`{flag}`" in text, f"vtok {name} {flag} is missing from the CLI reference"


def test_the_results_archive_keeps_every_section_and_only_valid_links(gen):
    archive, figures = gen.results_archive()
    source = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    assert re.findall(r"^#{2,3} .*$", archive, flags=re.M) == re.findall(r"^#{2,3} .*$", source, flags=re.M)
    assert figures and all((ROOT / "benchmarks" / f).is_file() for f in figures)
    for target in re.findall(r"\]\(([^)\s#]+)", archive):
        assert target in figures or (ROOT / "docs" / target).is_file(), f"the archive links to {target}"
