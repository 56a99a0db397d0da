from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DESCRIPTORS = ROOT.parent / "shared" / "data" / "descriptors"
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Never touch the user's real data directory or database."""
    monkeypatch.setenv("WHYCLIP_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WHYCLIP_DB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def store(tmp_path):
    from whyclip.store import Store

    return Store.open(tmp_path / "home")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random-weight CLIP folder, built once per test session."""
    from whyclip.ingest.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("models") / "tiny")


def shared_file(name: str) -> Path:
    path = SHARED_DESCRIPTORS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the paper's descriptor files live in ../shared beside a development checkout, not in a plain clone")
    return path


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
