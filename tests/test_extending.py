"""docs/extending.md's examples run as written, and its example quantizer keeps every quantizer invariant.

The Python blocks of a section are executed in order as one module (the part's file, then its use), so the
page cannot drift from the code: a renamed hook, a changed ``Config`` rule or a wrong shape fails here.
"""

from __future__ import annotations

import os
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_quantizers import (
    check_defaults_use_more_than_one_code_per_level,
    check_evaluation_changes_no_state,
    check_float32_under_bf16_autocast,
    check_gradients_reach_the_encoder_side,
    check_lookup_inverts_forward,
)
from vtok import registry
from vtok.interfaces import Quantizer

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "extending.md"


def section_code(title: str) -> str:
    """The ```python blocks of the ``## title`` section of docs/extending.md, joined in order."""
    text = PAGE.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/extending.md has no section {title!r}"
    blocks = re.findall(r"^```python\n(.*?)^```", match.group(1), flags=re.M | re.S)
    assert blocks, f"section {title!r} has no python block"
    return "\n".join(blocks)


def run_section(title: str, module_name: str) -> tuple[types.ModuleType, list[tuple[str, str]]]:
    """Execute a section's code as module ``module_name`` from the repository root (its presets are relative
    paths); returns the module and the (kind, name) pairs it registered."""
    before = {(kind, name) for kind, table in registry._REGISTRY.items() for name in table}
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module  # dataclass and type-hint resolution look the module up by name
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(section_code(title), f"{PAGE}:{title}", "exec"), module.__dict__)
    finally:
        os.chdir(cwd)
    added = sorted({(kind, name) for kind, table in registry._REGISTRY.items() for name in table} - before)
    return module, added


def forget(module: types.ModuleType, added: list[tuple[str, str]]) -> None:
    """Unregister what a section registered, so registry-wide tests later in the session see only vtok's parts
    (the registry has no public removal: parts are never unregistered in use)."""
    for kind, name in added:
        registry._REGISTRY[kind].pop(name)
    sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def example_quantizer() -> Iterator[str]:
    module, added = run_section("Add a quantizer", "vtok_docs_example_quantizer")
    try:
        kinds = [kind for kind, _ in added]
        assert kinds == ["quantizer"], f"the quantizer section should register one quantizer, registered {added}"
        yield added[0][1]
    finally:
        forget(module, added)


def test_the_example_builds_into_a_preset_and_codes_images(example_quantizer):
    module = sys.modules["vtok_docs_example_quantizer"]  # the section's usage block ran with the part's file
    assert module.tok.quantizer.registry_name == example_quantizer
    assert module.tokens.ids.shape == (2, 64, 2) and module.images.shape == (2, 3, 32, 32)


def test_the_example_implements_only_the_hooks(example_quantizer):
    cls = registry.lookup("quantizer", example_quantizer)
    assert issubclass(cls, Quantizer)
    assert {"_quantize", "_lookup"} <= set(vars(cls))
    assert not {"forward", "quantize_ids", "lookup"} & set(vars(cls)), "the base class owns the entry points"


CHECKS = [
    check_lookup_inverts_forward,
    check_gradients_reach_the_encoder_side,
    check_float32_under_bf16_autocast,
    check_evaluation_changes_no_state,
]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("options", [{}, {"dim": 12, "groups": 3, "codebook_size": 32, "beta": 1.0}])
def test_the_example_keeps_the_quantizer_invariants(example_quantizer, check, options):
    check(example_quantizer, options)


def test_the_example_defaults_do_not_collapse(example_quantizer):
    check_defaults_use_more_than_one_code_per_level(example_quantizer)


def test_the_example_refuses_a_dim_that_does_not_split(example_quantizer):
    from vtok.config import build_component
    from vtok.errors import VtokError

    with pytest.raises(VtokError, match="does not split into 3 groups"):
        build_component("quantizer", {"name": example_quantizer, "dim": 8, "groups": 3})


def test_the_encoder_and_decoder_example_runs():
    module, added = run_section("Add an encoder or decoder", "vtok_docs_example_parts")
    try:
        assert sorted(kind for kind, _ in added) == ["decoder", "encoder"]
        assert module.recon.shape == (2, 3, 32, 32)
        assert module.tok.encoder.downsample_factor == 4 and module.tok.decoder.in_channels == 32
    finally:
        forget(module, added)


def test_the_loss_term_example_runs():
    module, added = run_section("Add a loss term", "vtok_docs_example_loss")
    try:
        assert added == [("perceptual", "edges")]
        assert module.distances.shape == (2,) and bool((module.distances > 0).all())
        assert bool((module.same == 0).all())
    finally:
        forget(module, added)
