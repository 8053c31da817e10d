"""Shared fixtures: tiny tokenizers and images, everything on CPU and offline."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import vtok  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "tokenizer" / "vq_tiny.yaml"


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g) * 2 - 1


@pytest.fixture
def tiny_tokenizer() -> vtok.Tokenizer:
    torch.manual_seed(0)
    return vtok.build(TINY).eval()
