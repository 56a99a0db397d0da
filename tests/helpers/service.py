"""The HTTP service on the frogs library with the fake encoder (exact numbers): the store,
the key and an in-process client that the API test modules share."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tests.helpers.fakes import FROG_CONCEPTS, FROG_LIBRARY, install_fake, planted_png
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.cli.main import cli

CONCEPTS, LIBRARY = FROG_CONCEPTS, FROG_LIBRARY
KEY = "s3cret-key-for-tests"
FROG = planted_png(["protruding eyes", "bright green colour"])
BANANA = planted_png(["yellow peel"], colour=(240, 220, 40))


@pytest.fixture
def fake(monkeypatch):
    return install_fake(monkeypatch, CONCEPTS)


@pytest.fixture
def home(tmp_path, fake, monkeypatch):
    """A store with library 'frogs' v1, ingested by the CLI."""
    lib = tmp_path / "frogs.json"
    lib.write_text(json.dumps(LIBRARY), encoding="utf-8")
    result = CliRunner().invoke(cli, ["ingest", str(lib), "--library", "frogs"])
    assert result.exit_code == 0, result.output
    monkeypatch.setenv("WHYCLIP_API_KEYS", KEY)
    return tmp_path


@pytest.fixture
def client(home):
    with TestClient(create_app(ServiceSettings())) as c:
        yield c


def explain(client, images, **form):
    files = [("image", (name, data, "image/png")) for name, data in images]
    return client.post("/v1/explain", files=files, data={"library": "frogs", **form})


def wait_for_job(client, job_id: str, timeout: float = 60) -> dict:
    """An ingest job's record once it is no longer queued or running (a bound, not a timing)."""
    deadline = time.monotonic() + timeout
    while (job := client.get(f"/v1/jobs/{job_id}").json())["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job
