"""Every command in README.md runs: each shell line and the Python example, as written.

The README is the entrance, so a command there that no longer works is the first thing a user meets.
``COMMANDS`` says how each shell line of the README is run: as written in a scratch folder (with the
README's inputs made there and the demo shortened by one override), or by CI (``make test``, ``make
docs`` run by ``.ci/run``). A README line missing from ``COMMANDS`` fails the test, and so does an entry
of ``COMMANDS`` the README no longer has, so the two cannot drift apart.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_convert import llamagen_vq_state

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VTOK = [sys.executable, "-m", "vtok.cli"]

# README line -> how it is run: "ci" (.ci/run runs it), or the command actually run in the scratch folder
# (None: the line itself). The demo and training are shortened: the README's commands take minutes.
COMMANDS: dict[str, str | None] = {
    "make demo": "vtok demo --out vtok-demo train.steps=2",  # what the Makefile's demo target runs
    "make test": "ci",
    "pip wheel --no-deps -w dist .": None,
    "pip install dist/vtok-*.whl": "pip install --dry-run --no-deps --no-index dist/vtok-*.whl",
    "vtok reconstruct --tokenizer vtok-demo/run/final photo.jpg --size 64 --out recon/": None,
    "vtok encode --tokenizer vtok-demo/run/final photos/ --size 64 --out tokens.safetensors": None,
    "vtok decode tokens.safetensors --tokenizer vtok-demo/run/final --out decoded/": None,
    "vtok presets": None,
    "vtok train vq_demo train.steps=1000 --out runs/vq_demo": "vtok train vq_demo train.steps=2 --out runs/vq_demo",
    "vtok eval --tokenizer runs/vq_demo/final --data builtin --metrics psnr,ssim,codebook --out report/": None,
    "vtok convert --from llamagen-vq vq_ds16_c2i.pt --out models/llamagen-vq16": None,
}


def readme_shell_lines(page: Path = README) -> list[str]:
    """The commands of a page's ```bash blocks: comments dropped, continuation lines joined."""
    blocks = re.findall(r"^```bash\n(.*?)^```", page.read_text(), flags=re.M | re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split("#", 1)[0].split())
            if line:
                lines.append(line)
    return lines


def readme_python() -> str:
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    assert blocks, "README.md has no Python example"
    return "\n".join(blocks)


def test_every_readme_command_is_run_here_or_by_ci():
    lines = readme_shell_lines()
    assert lines == list(dict.fromkeys(lines)), "a README command appears twice"
    assert set(lines) == set(COMMANDS), (
        f"README commands without a way to run them: {sorted(set(lines) - set(COMMANDS))}; "
        f"entries the README no longer has: {sorted(set(COMMANDS) - set(lines))}"
    )
    ci = (ROOT / ".ci" / "run").read_text()
    for line, how in COMMANDS.items():
        if how == "ci":
            assert re.search(rf"^{re.escape(line)}$", ci, flags=re.M), f".ci/run does not run {line!r}"
    demo = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), flags=re.M)
    assert demo and demo.group(1).endswith("/vtok demo --out vtok-demo"), "make demo no longer runs vtok demo"


def test_the_readme_is_an_entrance():
    text = README.read_text()
    assert len(text.splitlines()) < 200
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", text):
        assert not re.match(r"[a-z]+://", target), f"README links outside the repository: {target}"
        assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_the_python_example_runs(tmp_path, monkeypatch):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    code = readme_python().replace('vtok.load("vtok-demo/run/final")', 'vtok.load("out/tok")')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["tokens"].ids.shape == (4, 64, 1) and scope["recon"].shape == (4, 3, 64, 64)
    assert (tmp_path / "out" / "tok" / "config.json").is_file()


def _run(command: str, cwd: Path) -> None:
    argv = shlex.split(command)
    if argv[0] == "vtok":
        argv = VTOK + argv[1:]
    elif argv[0] == "pip":
        argv = [sys.executable, "-m", "pip", *argv[1:]]
        argv = [str(p) for a in argv for p in (sorted(cwd.glob(a)) if "*" in a else [a])]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{command!r} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


@pytest.mark.slow
def test_every_readme_shell_command_runs(tmp_path):
    """Each line in README order, in one scratch folder holding what the lines read (the photos, a
    LlamaGen-layout checkpoint, the presets); `pip wheel .` builds the checkout into that folder."""
    from PIL import Image

    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    (work / "configs").symlink_to(ROOT / "configs")
    for i, name in enumerate(("photo.jpg", "photos/a.png", "photos/b.jpg")):
        Image.new("RGB", (96 + 8 * i, 80), (40 * i, 120, 200)).save(work / name)
    torch.save({"model": llamagen_vq_state()}, work / "vq_ds16_c2i.pt")
    for line in readme_shell_lines():
        how = COMMANDS[line]
        if how == "ci":
            continue
        command = line if how is None else how
        if command.startswith("pip wheel"):
            command = command.replace("-w dist .", f"-w {work / 'dist'} {ROOT}")
        _run(command, work)
    assert (work / "recon").is_dir() and (work / "tokens.safetensors").is_file()
    assert len(list((work / "decoded").glob("*.png"))) == 2
    assert (work / "report" / "results.json").is_file() and (work / "models" / "llamagen-vq16").is_dir()
    assert len(list((work / "dist").glob("vtok-*.whl"))) == 1

    # docs/getting-started.md repeats the README's commands; its Python example reads the demo's model.
    page = ROOT / "docs" / "getting-started.md"
    assert set(readme_shell_lines(page)) <= set(COMMANDS), "getting-started.md has commands the README lacks"
    cwd = os.getcwd()
    os.chdir(work)
    try:
        scope: dict = {}
        code = "\n".join(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.M | re.S))
        exec(compile(code, "docs/getting-started.md", "exec"), scope)
        assert scope["recon"].shape == (2, 3, 64, 64)
    finally:
        os.chdir(cwd)
