from __future__ import annotations

import os
from pathlib import Path

import pytest

# fixtures defined beside the builders they use (the planted eval world, the frogs service)
pytest_plugins = ["tests.helpers.planted", "tests.helpers.service"]


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
    from tests.helpers import pg

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
    from tests.helpers import pg

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
    from tests.helpers import pg

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
    from tests.helpers import pg

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


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def fresh_streamlit_caches(monkeypatch):
    """Streamlit's resource and data caches emptied before and after a test (pages cache
    the store, the encoder and image vectors across runs). Streamlit's deprecation warnings
    fail the test: they name calls of the dashboard's own that a coming release removes
    (Streamlit logs them rather than raising a Python warning)."""
    import streamlit as st
    from streamlit import deprecation_util

    deprecated: list[str] = []
    monkeypatch.setattr(deprecation_util._LOGGER, "warning", lambda message, *a, **k: deprecated.append(message))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()
    st.cache_data.clear()
    assert not deprecated, f"the dashboard calls what Streamlit deprecates: {sorted(set(deprecated))}"


# -- the two tiers --------------------------------------------------------------------------
# `python -m pytest` runs the fast tier: everything in process, the tiny model and the fake
# encoder, on SQLite. `--slow` adds the slow tier: fresh processes, the browser, the
# PostgreSQL matrix, kill tests and schemathesis' full run (`--slow -m slow`: that tier alone).


def pytest_addoption(parser):
    parser.addoption(
        "--slow",
        action="store_true",
        help="also run the slow tier (fresh processes, browser, PostgreSQL, kill tests, full schemathesis)",
    )


def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(item, "callspec", None)
        if params is not None and "postgresql" in (params.params.get("database"), params.params.get("db_url")):
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.slow)
    if config.getoption("--slow"):
        return
    fast = [item for item in items if item.get_closest_marker("slow") is None]
    if len(fast) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("slow")])
        items[:] = fast
