"""The preset catalogue: every YAML in configs/ by name, names wherever a path works, one-line errors, `vtok presets`.

The wheel itself (presets packaged, the demo run from an unpacked copy) is tests/test_wheel.py.
"""

from __future__ import annotations

import json
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import vtok
from vtok.catalog import KINDS, Preset, find, presets, read_config
from vtok.cli import main
from vtok.config import read_yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ON_DISK = [p for kind in KINDS for p in sorted((CONFIGS / kind).glob("*.yaml"))]  # by kind, then name


def _error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vtok: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_the_catalogue_is_every_yaml_file_of_configs_with_unique_names():
    found = presets()
    assert [(p.kind, p.name) for p in found] == [(p.parent.name, p.stem) for p in ON_DISK]
    assert len({p.name for p in found}) == len(found), "a name in two kinds would shadow one of them"


@pytest.mark.parametrize("path", ON_DISK, ids=[f"{p.parent.name}/{p.stem}" for p in ON_DISK])
def test_a_name_reads_the_same_mapping_as_its_path(path: Path):
    preset = find(path.stem)
    assert preset.kind == path.parent.name
    assert preset.read() == read_yaml(path) == find(path.name).read()  # "vq_demo.yaml" is the same name


def test_names_work_in_build_load_config_and_overlays():
    by_name = vtok.load_config("vq_tiny", ["train.steps=3"], ["decoder"])
    by_path = vtok.load_config(
        CONFIGS / "tokenizer" / "vq_tiny.yaml", ["train.steps=3"], [CONFIGS / "finetune" / "decoder.yaml"]
    )
    assert by_name == by_path and by_name["train"]["freeze"] == ["encoder", "quantizer"]
    assert vtok.load_config("gpt_tiny")["model"]["name"] == "gpt"
    assert type(vtok.build("vq_tiny")).__name__ == type(vtok.build(CONFIGS / "tokenizer" / "vq_tiny.yaml")).__name__


def test_an_existing_file_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = read_yaml(CONFIGS / "tokenizer" / "vq_tiny.yaml")
    mine["train"] = {**mine.get("train", {}), "steps": 7}
    Path("vq_demo").write_text(json.dumps(mine))  # JSON is YAML
    assert read_config("vq_demo")["train"]["steps"] == 7
    assert read_config("vq_f16") == read_yaml(CONFIGS / "tokenizer" / "vq_f16.yaml")  # no such file: the name


def test_unknown_names_and_wrong_kinds_fail_in_one_line_naming_the_closest(tmp_path, capsys):
    out = str(tmp_path / "run")
    err = _error(capsys, ["train", "vq_demoo", "--out", out])
    assert "'vq_demoo'" in err and "closest: vq_demo" in err
    assert "--overlay" in _error(capsys, ["train", "decoder", "--out", out])
    assert "tokenizer preset, not a finetune one" in _error(
        capsys, ["train", "vq_tiny", "--overlay", "vq_demo", "--out", out]
    )
    assert "closest: gpt_demo" in _error(capsys, ["train", "gpt_dem", "--out", out])
    err = _error(capsys, ["train", "nowhere/configs/tokenizer/vq_demo.yaml", "--out", out])
    assert "config file not found" in err and "preset of that name is 'vq_demo'" in err
    assert "config file not found: none.yaml; no tokenizer or ar preset" in _error(
        capsys, ["train", "none.yaml", "--out", out]
    )
    assert not (tmp_path / "run").exists()


def test_a_preset_inside_a_zip_reads_like_a_file(tmp_path):
    archive = tmp_path / "presets.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(CONFIGS / "tokenizer" / "vq_demo.yaml", "vtok/configs/tokenizer/vq_demo.yaml")
    preset = Preset("vq_demo", "tokenizer", zipfile.Path(archive, "vtok/configs/tokenizer/vq_demo.yaml"))
    assert preset.read() == read_yaml(CONFIGS / "tokenizer" / "vq_demo.yaml")


def test_summary_is_the_first_sentence_of_the_leading_comment():
    assert (
        find("vq_f16").summary()
        == "LlamaGen VQ-16: 16x downsampling, 16384 l2-normalised codes of dim 8, ~72M parameters."
    )
    assert find("vq_gigatok_bl").summary().startswith("GigaTok B-L (Xiong et al., 2025;")  # "al." ends nothing


def test_vtok_presets_lists_every_preset_by_kind(capsys):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["name"]) for r in rows] == [(p.parent.name, p.stem) for p in ON_DISK]
    assert not [r for r in rows if "error" in r], "every preset resolves"
    demo = next(r for r in rows if r["name"] == "vq_demo")
    assert demo["family"] == "grid/vq" and demo["image_size"] == 64 and demo["description"].startswith("The demo:")
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ON_DISK) + len(KINDS)  # a heading a kind, a line a preset
    assert lines[0].startswith("tokenizer presets") and any(
        line.split()[:2] == ["vq_demo", "grid/vq"] for line in lines
    )


def test_vtok_presets_counts_parameters_on_the_meta_device(capsys):
    assert main(["presets", "--kind", "ar", "--json", "--params"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert set(rows) == {p.stem for p in ON_DISK if p.parent.name == "ar"}
    assert 100e6 < rows["gpt_b"]["params"] < 120e6  # LlamaGen GPT-B: ~111M


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"vtok {vtok.__version__}" == f"vtok {version('vtok')}"


def test_a_run_may_be_named_after_the_preset_it_trains(tmp_path, monkeypatch):
    """`vtok train vq_tiny --out vq_tiny`: the name is not a path beside the run, so nothing is "inside" it."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "vq_tiny", "train.steps=1", "train.save_every=1", "--out", "vq_tiny"]) == 0
    assert (tmp_path / "vq_tiny" / "final" / "config.json").is_file()
