"""The wheel is a working install: built offline, unpacked outside the checkout, `vtok presets` and `vtok demo` run.

The commands run from a temporary folder with only the unpacked wheel on PYTHONPATH (the dependencies come from
this interpreter's environment), and the test checks that ``vtok`` was imported from there, so a module, preset or
overlay that only the checkout has (an install step missing from the wheel) fails here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("tokenizer", "ar", "finetune")
# Two steps of the demo, with 64 codes so the classic k-means baseline it is read against fits in seconds (at the
# demo's 1024 codes that baseline alone takes ~50 s on a CPU core); every step of `vtok demo` still runs.
DEMO = ["train.steps=2", "model.quantizer.codebook_size=64"]


def _can_build_offline() -> bool:
    """setuptools >= 70.1 builds wheels itself; before that it needs the ``wheel`` package."""
    for module in ("setuptools.command.bdist_wheel", "wheel.bdist_wheel"):
        try:
            __import__(module)
            return True
        except ImportError:
            pass
    return False


def _sources(dest: Path) -> Path:
    """A copy of what the build reads (pyproject's package folders, README): no stale build/ of the checkout."""
    if tomllib is None:
        pytest.skip("reading pyproject.toml needs tomllib (Python >= 3.11)")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(project["tool"]["setuptools"]["package-dir"].values())
    dest.mkdir()
    for name in ["pyproject.toml", project["project"]["readme"], *sorted(folders)]:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def _build_wheel(tmp: Path) -> Path:
    src = _sources(tmp / "src")
    dist = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    done = subprocess.run([*cmd, "--wheel-dir", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("vtok-*.whl")
    return wheel


def _run(args: list[str], cwd: Path, site: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"))
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout


@pytest.mark.skipif(not _can_build_offline(), reason="this setuptools cannot build a wheel offline (no bdist_wheel)")
def test_the_wheel_carries_vtok_and_runs_the_demo_outside_the_checkout(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "vtok/py.typed" in names
    assert "vtok/known_checkpoints.yaml" in names  # read by vtok.known with importlib.resources
    for kind in KINDS:
        shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith(f"vtok/configs/{kind}/") and n.endswith(".yaml")}
        assert shipped == {p.name for p in (ROOT / "configs" / kind).glob("*.yaml")}, f"configs/{kind} in the wheel"

    site, work = tmp_path / "site", tmp_path / "work"
    zipfile.ZipFile(wheel).extractall(site)
    work.mkdir()
    where = _run(
        ["-c", "import vtok, vtok.configs, vtok.tokenizers; print(vtok.__file__, vtok.configs.__file__)"], work, site
    )
    assert all(Path(f).is_relative_to(site) for f in where.split()), f"vtok imported from the checkout: {where}"

    version = _run(["-m", "vtok.cli", "--version"], work, site)
    listing = _run(["-m", "vtok.cli", "presets"], work, site)
    assert version.startswith("vtok ") and "vq_demo" in listing and "gpt_demo" in listing and "decoder" in listing
    assert "does not resolve" not in listing
    known = _run(["-c", "from vtok.known import known_checkpoints; print(len(known_checkpoints()))"], work, site)
    assert int(known) > 0

    printed = _run(["-m", "vtok.cli", "demo", *DEMO, "--out", "demo"], work, site)
    assert "psnr" in printed and "classic_vq psnr" in printed
    for name in ("results.json", "heldout.png", "heldout_tokens.safetensors", "run/final/model.safetensors"):
        assert (work / "demo" / name).is_file(), name
