"""``whyclip serve`` as a real process on a loopback port, with the tiny random CLIP: a
server SIGKILLed mid-ingest leaves nothing half-visible and the job resumes from the cache;
two replicas sharing one store give the same answers and see each other's versions."""

from __future__ import annotations

import json
import signal
import time

import pytest
from click.testing import CliRunner

from tests.helpers.server import serving
from tests.helpers.service import BANANA, FROG, wait_for_job
from whyclip.ui.cli.main import cli

pytestmark = pytest.mark.slow


def big_library(n_classes: int = 200, per_class: int = 30) -> bytes:
    return json.dumps(
        {f"class {c}": [f"descriptor {d} of class {c}" for d in range(per_class)] for c in range(n_classes)}
    ).encode()


def submit(client, data: bytes, name: str = "big", commit_every: int = 400) -> str:
    r = client.post(
        "/v1/libraries", files={"file": ("big.json", data)}, data={"name": name, "commit_every": str(commit_every)}
    )
    assert r.status_code == 202, r.text
    return r.json()["id"]


def libraries(home) -> list[dict]:
    result = CliRunner().invoke(cli, ["--home", str(home), "libraries", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_sigkill_mid_ingest_leaves_nothing_half_visible_and_resumes(tmp_path, tiny_model):
    home, data = tmp_path / "store", big_library()
    with serving(home, tiny_model) as (proc, client):
        job_id = submit(client, data)
        deadline = time.monotonic() + 300
        while True:  # kill once some prompts are committed to the cache and others are not
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["state"] in ("queued", "running"), f"the job ended before it could be killed: {job}"
            if job["progress"]["done"] >= 800:
                break
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    total = job["progress"]["total"]
    assert 800 <= job["progress"]["done"] < total
    assert libraries(home) == []  # nothing half-visible
    with serving(home, tiny_model) as (_, client):
        old = client.get(f"/v1/jobs/{job_id}").json()
        assert old["state"] == "interrupted"
        assert "submit the file again" in old["error"]
        job = wait_for_job(client, submit(client, data), timeout=300)
    assert job["state"] == "done", job
    assert job["result"]["n_reused"] >= 800
    assert job["result"]["n_embedded"] == total - job["result"]["n_reused"]
    (info,) = libraries(home)
    assert (info["name"], info["version"], info["n_descriptors"]) == ("big", 1, 6000)


def test_two_replicas_share_one_store(tmp_path, tiny_model, db_url):
    """Two serve processes on one data directory and one database (SQLite in the home, or
    PostgreSQL): the same answers, and a version published through one is served by the
    other without a restart."""
    home = tmp_path / "shared"
    lib = json.dumps({"tree frog": ["protruding eyes", "bright green colour"], "banana": ["yellow peel"]}).encode()
    with serving(home, tiny_model, db_url) as (_, a), serving(home, tiny_model, db_url) as (_, b):
        assert wait_for_job(a, submit(a, lib, "frogs"), timeout=300)["state"] == "done"
        files = [("image", ("frog.png", FROG)), ("image", ("banana.png", BANANA))]
        from_a = a.post("/v1/explain", files=files, data={"library": "frogs"}).json()["explanations"]
        from_b = b.post("/v1/explain", files=files, data={"library": "frogs"}).json()["explanations"]
        assert from_a == from_b
        assert [e["version"] for e in from_b] == [1, 1]
        newer = json.dumps({"tree frog": ["protruding eyes"], "banana": ["yellow peel", "curved"]}).encode()
        assert wait_for_job(b, submit(b, newer, "frogs"), timeout=300)["state"] == "done"
        assert a.post("/v1/explain", files=files, data={"library": "frogs"}).json()["explanations"][0]["version"] == 2
        assert [v["version"] for v in a.get("/v1/libraries/frogs").json()["versions"]] == [2, 1]
