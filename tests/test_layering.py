"""Dependencies point one way: parts -> core, never back, and no part package imports another.

Read from the source (every import statement, at any depth), so a lazy import inside
a function counts as much as one at the top of a module, and a relative import
(``from ..eval import psnr``) counts as the absolute name it resolves to.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def resolve(package: str, level: int, name: str | None) -> str:
    """The absolute module of ``from {'.' * level}{name} import ...`` written in ``package``."""
    parts = package.split(".")
    if level - 1 >= len(parts):
        raise ValueError(f"a relative import of level {level} in {package} reaches above the top-level package")
    base = ".".join(parts[: len(parts) - (level - 1)])
    return f"{base}.{name}" if name else base


def imported(path: Path, module: str | None = None) -> set[str]:
    """Every vtok module ``path`` imports, relative imports resolved against ``module`` (its dotted name; by
    default from where the file lies)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            module = module or module_name(path)
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            base = resolve(package, node.level, node.module)
            names.add(base)
            if node.module is None:  # ``from .. import x``: x may be a module of that package, so it counts as one
                names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {n for n in names if n == "vtok" or n.startswith("vtok.")}


def part_of(module: str) -> str | None:
    return next((p for p in PARTS if module == p or module.startswith(p + ".")), None)


def sources() -> list[Path]:
    files = [p for folder in ("vtok", *PARTS.values()) for p in (ROOT / folder).rglob("*.py")]
    assert len(files) > 40, "the source tree was not found"
    return files


def violations(module: str, targets: set[str]) -> list[str]:
    """``module -> target`` for each import of another part (the command layer may import any)."""
    if module.startswith(COMMAND_LAYER):
        return []
    own = part_of(module)
    return [f"{module} -> {t}" for t in sorted(targets) if part_of(t) not in (None, own)]


def test_core_imports_no_part_and_parts_import_only_the_core():
    bad = [v for path in sources() for v in violations(module_name(path), imported(path))]
    assert not bad, "imports against the layering: " + "; ".join(sorted(bad))


def test_the_checker_sees_a_violation(tmp_path):
    # The rule above is only as good as the parser: it must see lazy imports inside functions.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from vtok.eval.psnr import psnr_per_image\n    import vtok.tokenizers.grid\n")
    assert imported(source) == {"vtok.eval.psnr", "vtok.tokenizers.grid"}


def test_the_checker_resolves_relative_imports(tmp_path):
    # Written in vtok.tokenizers.quantizers.vq: one import of its own package, two of other parts, one of the core.
    source = tmp_path / "vq.py"
    source.write_text(
        "from .upkeep import eval_mode_ids\n"
        "from ...eval.psnr import psnr_per_image\n"
        "def f():\n    from ... import decoders\n    from ...registry import register\n"
    )
    module = "vtok.tokenizers.quantizers.vq"
    assert imported(source, module) == {
        "vtok.tokenizers.quantizers.upkeep",
        "vtok.eval.psnr",
        "vtok",
        "vtok.decoders",
        "vtok.registry",
    }
    assert violations(module, imported(source, module)) == [f"{module} -> vtok.decoders", f"{module} -> vtok.eval.psnr"]
    # In a package's __init__ the dot is the package itself, and no import may climb above vtok.
    init = tmp_path / "__init__.py"
    init.write_text("from .psnr import PSNR\n")
    assert imported(init, "vtok.eval") == {"vtok.eval.psnr"}
    init.write_text("from .... import x\n")
    with pytest.raises(ValueError, match="above the top-level package"):
        imported(init, "vtok.eval")


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
