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
    from whyclip.ingest.encoder.testmodel import make_test_model

    return make_test_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server URL for the session (see tests/pg.py), or a skip saying why not."""
    import pg

    url, why, cluster = pg.start_server()
    try:
        if url is None:
            pytest.skip(f"PostgreSQL tests need a server: {why}")
        yield url
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request):
    """The metadata database of a test: None (SQLite in the home) or a fresh PostgreSQL
    database, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    import pg

    server = request.getfixturevalue("pg_server")
    url, name = pg.create_database(server)
    try:
        yield url
    finally:
        pg.drop_database(server, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, _isolated_home, monkeypatch):
    """Runs a whole test module on both metadata databases: with ``pytestmark =
    pytest.mark.usefixtures("database")`` every store, CLI call (in-process or a child
    process) and service that the test opens without an explicit URL uses ``$WHYCLIP_DB``,
    here a fresh PostgreSQL database for the PostgreSQL run (dropped afterwards)."""
    if request.param == "sqlite":
        yield None
        return
    import pg

    server = request.getfixturevalue("pg_server")
    url, name = pg.create_database(server)
    monkeypatch.setenv("WHYCLIP_DB", url)
    try:
        yield url
    finally:
        pg.drop_database(server, name)  # WITH (FORCE): connections the test left open go too


@pytest.fixture
def other_database(request):
    """A factory for a second, independent metadata database: under the PostgreSQL run of
    ``database`` a new PostgreSQL database each call (dropped afterwards), else None (a
    second home then has its own SQLite file). For tests that open two separate stores."""
    url = os.environ.get("WHYCLIP_DB")
    made = []
    if not url:
        yield lambda: None
        return
    import pg

    server = request.getfixturevalue("pg_server")

    def make() -> str:
        new, name = pg.create_database(server)
        made.append(name)
        return new

    try:
        yield make
    finally:
        for name in made:
            pg.drop_database(server, name)


def shared_file(name: str) -> Path:
    path = SHARED_DESCRIPTORS / name
    if not path.is_file():
        pytest.skip(
            f"{path} is absent: the paper's descriptor files live in ../shared beside a development checkout, not in a plain clone"
        )
    return path


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def fresh_streamlit_caches():
    """Streamlit's resource and data caches emptied before and after a test (pages cache
    the store, the encoder and image vectors across runs)."""
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()
