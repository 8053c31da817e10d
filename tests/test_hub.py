"""Hub ids, offline: a cache the test builds in huggingface_hub's layout; no test touches the network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import vtok
from vtok.cli import main

from .test_convert import SOURCES

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cached_repo(cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """Place ``files`` as the ``main`` snapshot of model repository ``repo`` in a Hub cache folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for name, src in files.items():
        shutil.copy(src, snapshot / name)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, tiny_tokenizer):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    cached_repo(cache, "org/tok", {n: tmp_path / "tok" / n for n in ("config.json", "model.safetensors")})
    torch.save(SOURCES["llamagen-vq"](), tmp_path / "vq_ds16_c2i.pt")
    cached_repo(cache, "org/llamagen", {"vq_ds16_c2i.pt": tmp_path / "vq_ds16_c2i.pt"})
    return cache


def test_load_and_encode_by_hub_id_from_the_cache(hub_cache, tiny_tokenizer, tmp_path, capsys):
    assert vtok.load("org/tok").fingerprint() == tiny_tokenizer.fingerprint()
    assert vtok.load(f"org/tok@{COMMIT}").fingerprint() == tiny_tokenizer.fingerprint()
    image = tmp_path / "x.png"
    from vtok.images import save_image

    save_image(torch.zeros(3, 32, 32), image)
    out = tmp_path / "t.safetensors"
    assert main(["encode", "--tokenizer", "org/tok", str(image), "--out", str(out)]) == 0


@pytest.mark.parametrize(
    "ref, words",
    [("org/absent", "not in the Hugging Face cache"), ("org/tok@v9", "not in the Hugging Face cache")],
)
def test_offline_and_not_cached_is_one_line(hub_cache, ref, words, capsys, tmp_path):
    code = main(["decode", str(tmp_path / "none.safetensors"), "--tokenizer", ref, "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0]


def test_a_missing_local_folder_is_not_taken_for_a_hub_file(hub_cache, tmp_path):
    with pytest.raises(vtok.VtokError, match="model folder not found"):
        vtok.load("runs/vq16/final")


def test_convert_from_a_hub_file_records_id_and_revision(hub_cache, tmp_path):
    assert main(["convert", "--from", "llamagen-vq", "org/llamagen/vq_ds16_c2i.pt", "--out", str(tmp_path / "m")]) == 0
    source = json.loads((tmp_path / "m" / "config.json").read_text())["source"]
    assert source["hub_id"] == "org/llamagen" and source["revision"] == COMMIT
    assert source["family"] == "llamagen-vq" and source["file"] == "vq_ds16_c2i.pt" and len(source["sha256"]) == 64
    # the repository alone: its only checkpoint is taken
    assert main(["convert", "--from", "llamagen-vq", "org/llamagen", "--out", str(tmp_path / "m2")]) == 0


def test_push_writes_a_model_card_and_uploads_the_model_files(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    from huggingface_hub import HfApi

    calls = {}

    class Info:
        commit_url = "https://huggingface.co/org/tok/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("create", (repo_id, kw)))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.setdefault("upload", kw) and Info())
    tiny_tokenizer.save_pretrained(tmp_path / "final")
    results = tmp_path / "report" / "results.json"
    results.parent.mkdir()
    results.write_text(json.dumps({"scores": {"psnr": {"PSNR": 21.5}}, "protocols": {"psnr": {"images": 52}}}))
    argv = ["push", str(tmp_path / "final"), "org/tok", "--data", "the built-in photographs", "--results", str(results)]
    assert main(argv) == 0
    card = (tmp_path / "final" / "README.md").read_text()
    assert 'vtok.load("org/tok")' in card and "the built-in photographs" in card and "| psnr PSNR | 21.5 |" in card
    assert calls["create"][0] == "org/tok" and calls["upload"]["repo_id"] == "org/tok"
    assert "README.md" in calls["upload"]["allow_patterns"]
