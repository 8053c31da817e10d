"""Dependencies point one way: parts -> core, never back, and no part package imports another.

Read from the source (every import statement, at any depth), so a lazy import inside
a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Import package -> folder (pyproject's package-dir map).
PARTS = {
    "vtok.tokenizers": "tokenizers",
    "vtok.decoders": "decoders",
    "vtok.ar_models": "ar_models",
    "vtok.eval": "eval",
}
COMMAND_LAYER = ("vtok.cli",)  # composes the parts: may import any of them


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    for package, folder in PARTS.items():
        if rel.parts[0] == folder:
            return ".".join([package, *rel.parts[1:]]).removesuffix(".__init__")
    return ".".join(rel.parts).removesuffix(".__init__")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n == "vtok" or n.startswith("vtok.")}


def part_of(module: str) -> str | None:
    return next((p for p in PARTS if module == p or module.startswith(p + ".")), None)


def sources() -> list[Path]:
    files = [p for folder in ("vtok", *PARTS.values()) for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 40, "the source tree was not found"
    return files


def test_core_imports_no_part_and_parts_import_only_the_core():
    bad = []
    for path in sources():
        module = module_name(path)
        if module.startswith(COMMAND_LAYER):
            continue
        own = part_of(module)
        for target in imported(path):
            theirs = part_of(target)
            if theirs is not None and theirs != own:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layering: " + "; ".join(sorted(bad))


def test_the_checker_sees_a_violation(tmp_path):
    # The rule above is only as good as the parser: it must see lazy imports inside functions.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from vtok.eval.psnr import psnr_per_image\n    import vtok.tokenizers.grid\n")
    assert imported(source) == {"vtok.eval.psnr", "vtok.tokenizers.grid"}


def test_import_vtok_loads_no_part_package():
    code = (
        "import sys, vtok; "
        "loaded = [m for m in sys.modules if m.startswith(('vtok.tokenizers', 'vtok.decoders', "
        "'vtok.ar_models', 'vtok.eval', 'vtok.training', 'accelerate'))]; "
        "vtok.load_config('configs/tokenizer/vq_tiny.yaml'); "
        "loaded += [m for m in sys.modules if m.startswith(('vtok.training', 'accelerate'))]; "
        "print(sorted(set(loaded)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
