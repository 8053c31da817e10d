"""Hugging Face Hub ids wherever vtok takes a model folder or a checkpoint file, and publishing a model.

``org/name`` (optionally ``org/name@revision``, a branch, tag or commit) is fetched
with huggingface_hub into its usual cache, so ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``,
``HF_TOKEN`` and revision pinning behave as they do for every Hub library. An
existing local path always wins over a Hub id of the same spelling.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from vtok.errors import VtokError

# org/name[@revision] or, for a file inside a repository, org/name/path/in/repo.ext[@revision]
HUB_ID = re.compile(r"(?P<repo>[\w.-]+/[\w.-]+)(?P<file>(/[\w.-]+)+)?(@(?P<revision>[\w./-]+))?")
MODEL_FILES = ["config.json", "model.safetensors", "README.md"]
CHECKPOINT_FILES = ["model.safetensors", "pytorch_model.bin", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt"]


def is_hub_id(ref: str | Path) -> bool:
    """True for ``org/name[...]`` strings that do not name an existing local path."""
    return isinstance(ref, str) and not Path(ref).exists() and HUB_ID.fullmatch(ref) is not None


def _download(ref: str, patterns: list[str] | None = None, filename: str | None = None) -> Path:
    """The cached local path of a Hub repository snapshot (or one file of it); one-line errors."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    match = HUB_ID.fullmatch(ref)
    repo, revision = match["repo"], match["revision"]
    cache = os.environ.get("HF_HUB_CACHE")  # read now, not at import, so a changed cache is honoured
    try:
        if filename is not None:
            return Path(hf_hub_download(repo, filename, revision=revision, cache_dir=cache))
        return Path(snapshot_download(repo, revision=revision, cache_dir=cache, allow_patterns=patterns))
    except LocalEntryNotFoundError:
        raise VtokError(
            f"{ref}: no such local path, and as a Hub id it is not in the Hugging Face cache and the Hub cannot be "
            "reached (offline or HF_HUB_OFFLINE=1); fetch it once with network access"
        ) from None
    except RepositoryNotFoundError:
        raise VtokError(f"{ref}: no such local path, nor Hub repository {repo} (private? `hf auth login`)") from None
    except RevisionNotFoundError:
        raise VtokError(f"{repo} has no revision {revision!r}") from None
    except EntryNotFoundError:
        raise VtokError(f"{repo} has no file {filename!r}") from None
    except HfHubHTTPError as err:
        raise VtokError(f"the Hub refused {ref}: {str(err).splitlines()[0]}") from None


def _revision_of(path: Path) -> str | None:
    """The commit a cached snapshot path belongs to (``.../snapshots/<commit>/...``)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else None


def model_dir(ref: str | Path) -> Path:
    """A local model folder, or the cached snapshot of a Hub id holding a vtok model."""
    if not is_hub_id(ref) or HUB_ID.fullmatch(str(ref))["file"]:  # a/b/c is a missing local folder, not a repo
        return Path(ref)
    return _download(str(ref), MODEL_FILES)


def checkpoint_file(ref: str | Path) -> tuple[Path, dict[str, Any]]:
    """A local checkpoint file, or one fetched from the Hub, and what to record about where it came from.

    ``org/name/file.pt`` fetches that file; ``org/name`` the repository's weights
    (``model.safetensors``, else ``pytorch_model.bin``, else its only checkpoint file).
    """
    if not is_hub_id(ref):
        return Path(ref), {}
    match = HUB_ID.fullmatch(str(ref))
    if match["file"]:
        path = _download(str(ref), filename=match["file"].lstrip("/"))
    else:
        folder = _download(str(ref), [*CHECKPOINT_FILES, "config.json", "*.yaml"])
        found = [p for pattern in CHECKPOINT_FILES for p in sorted(folder.glob(pattern))]
        if not found:
            raise VtokError(f"{ref} holds no checkpoint file ({', '.join(CHECKPOINT_FILES)})")
        if len(set(found)) > 1 and found[0].name not in ("model.safetensors", "pytorch_model.bin"):
            names = ", ".join(sorted({p.name for p in found}))
            raise VtokError(f"{ref} holds several checkpoints ({names}); name one: {match['repo']}/FILE")
        path = found[0]
    return path, {"hub_id": match["repo"], "revision": _revision_of(path)}


def source_config_file(checkpoint: Path) -> Path | None:
    """The config file published beside a Hub checkpoint (TiTok's ``config.json``), if any."""
    if "snapshots" not in checkpoint.parts:
        return None
    for name in ("config.json", "config.yaml"):
        if (checkpoint.parent / name).is_file():
            return checkpoint.parent / name
    return None


def model_card(model_dir: Path, repo_id: str, data: str | None, results: Path | None) -> str:
    """A README.md for the Hub: what the model is, its config, the training data and eval results."""
    config = json.loads((model_dir / "config.json").read_text())
    spec = config["model"]
    parts = {k: v["name"] for k, v in spec.items() if isinstance(v, dict) and "name" in v}
    lines = [
        "---",
        "library_name: vtok",
        "tags: [vtok, image-tokenizer]" if spec["name"] != "gpt" else "tags: [vtok, autoregressive, image-generation]",
        "---",
        f"# {repo_id}",
        "",
        f"A vtok `{spec['name']}` model ({', '.join(f'{k}: {v}' for k, v in parts.items())}).",
        "",
        "```python",
        "import vtok",
        f'model = vtok.load("{repo_id}")',
        "```",
        "",
        f"Training data: {data or 'not stated by the uploader'}.",
    ]
    if config.get("source"):
        src = config["source"]
        lines += [
            "",
            f"Converted with `vtok convert --from {src['family']}` from `{src['file']}` (sha256 {src['sha256']}).",
        ]
    if results is not None:
        report = json.loads(results.read_text())
        lines += ["", "## Evaluation (vtok eval)", "", "| metric | value |", "|---|---|"]
        for metric, columns in report.get("scores", {}).items():
            for column, value in columns.items() if isinstance(columns, dict) else [(metric, columns)]:
                lines.append(f"| {metric} {column} | {value} |")
        if report.get("protocols"):
            lines += ["", "Protocol:", "", "```json", json.dumps(report["protocols"], indent=1), "```"]
    lines += ["", "## Config", "", "```json", json.dumps(spec, indent=1), "```", ""]
    return "\n".join(lines)


def push(model_dir: str | Path, repo_id: str, data: str | None = None, results: str | Path | None = None,
         private: bool = False, revision: str | None = None) -> str:  # fmt: skip
    """Upload a vtok model folder to the Hub with a model card; returns the commit URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from vtok.io import atomic_path
    from vtok.pretrained import read_config

    model_dir = Path(model_dir)
    read_config(model_dir)  # a vtok model folder, or a one-line error
    if results is not None and not Path(results).is_file():
        raise VtokError(f"eval results not found: {results} (vtok eval writes REPORT/results.json)")
    card = model_card(model_dir, repo_id, data, Path(results) if results else None)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        # The card is written beside the weights only once the Hub has answered: an offline push leaves the folder.
        with atomic_path(model_dir / "README.md") as tmp:
            tmp.write_text(card)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(model_dir), allow_patterns=MODEL_FILES, revision=revision,
            commit_message="vtok push",
        )  # fmt: skip
    except HfHubHTTPError as err:
        raise VtokError(f"the Hub refused the upload to {repo_id}: {str(err).splitlines()[0]}") from None
    except OSError as err:  # offline (HF_HUB_OFFLINE=1, no network: ConnectionError, requests errors)
        reason = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise VtokError(f"cannot reach the Hub to upload to {repo_id}: {reason}") from None
    return str(info.commit_url)
