"""The HTTP service with the fake encoder (exact numbers): one test per endpoint, the
explain answer equal to ``whyclip explain --json``, and the key check."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from tests.helpers.service import BANANA, FROG, KEY, LIBRARY, explain
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.cli.main import cli

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def cli_json(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_explain_answers_what_the_cli_prints(client, home):
    (home / "frog.png").write_bytes(FROG)
    (home / "banana.png").write_bytes(BANANA)
    paths = [str(home / "frog.png"), str(home / "banana.png")]
    for options, args in (
        ({}, []),
        (
            {"top": "3", "aggregate": "max", "retrieve": "4", "compare": ["banana", "tree frog"]},
            ["--top", "3", "--aggregate", "max", "--retrieve", "4", "--compare", "banana", "tree frog"],
        ),
    ):
        expected = cli_json(["explain", *paths, "--library", "frogs", "--json", *args])
        r = explain(client, [(paths[0], FROG), (paths[1], BANANA)], **options)
        assert r.status_code == 200, r.text
        assert r.json()["explanations"] == expected
    assert expected[0]["contrast"]["a"] == "banana"
    assert expected[0]["classes"][0]["class"] == "tree frog"
    assert expected[0]["retrieval"] == {
        "exact": True,
        "index": "Flat",
        "recall_at_10": 1.0,
        "calibrated_on": None,
        "note": None,
    }


def test_explain_serves_a_new_version_without_restart(client, home):
    assert explain(client, [("f.png", FROG)]).json()["explanations"][0]["version"] == 1
    lib = home / "frogs2.json"
    lib.write_text(json.dumps({**LIBRARY, "banana": ["yellow peel"]}), encoding="utf-8")
    assert CliRunner().invoke(cli, ["ingest", str(lib), "--library", "frogs"]).exit_code == 0
    now = explain(client, [("f.png", FROG)]).json()["explanations"][0]
    assert now["version"] == 2
    assert explain(client, [("f.png", FROG)], version="1").json()["explanations"][0]["version"] == 1


def test_retrieve_by_image_and_text(client):
    r = client.post("/v1/retrieve", files={"image": ("f.png", FROG, "image/png")}, data={"library": "frogs", "k": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {h["descriptor"] for h in body["retrieved"]} == {"protruding eyes", "bright green colour"}
    assert body["index"]["exact"] is True
    assert body["index"]["factory"] == "Flat"
    r = client.post(
        "/v1/retrieve", data={"library": "frogs", "text": "yellow peel", "k": "1"}, files={"none": ("", b"")}
    )
    assert r.status_code == 200, r.text
    assert r.json()["retrieved"][0]["descriptor"] == "yellow peel"
    assert r.json()["query"]["kind"] == "text"


def test_libraries_versions_and_pages(client):
    (info,) = client.get("/v1/libraries").json()
    assert (info["name"], info["version"], info["n_classes"], info["n_descriptors"]) == ("frogs", 1, 4, 7)
    versions = client.get("/v1/libraries/frogs").json()["versions"]
    assert [v["version"] for v in versions] == [1]
    page = client.get("/v1/libraries/frogs/classes", params={"limit": 2}).json()
    assert page["total"] == 4
    assert [c["class"] for c in page["items"]] == ["tree frog", "tailed frog"]
    found = client.get("/v1/libraries/frogs/descriptors", params={"search": "FROG", "limit": 50}).json()
    assert found["total"] == 5  # every descriptor of the two frogs: the class name matches
    assert {d["class"] for d in found["items"]} == {"tree frog", "tailed frog"}
    peel = client.get("/v1/libraries/frogs/descriptors", params={"search": "peel"}).json()["items"]
    assert [(d["class"], d["descriptor"]) for d in peel] == [("banana", "yellow peel")]
    assert peel[0]["prompt"] == "banana, which has yellow peel"
    by_text = {  # A-Z order, under its name and under the spelling 0.1.0 took by mistake
        order: [
            d["descriptor"]
            for d in client.get("/v1/libraries/frogs/descriptors", params={"order": order, "limit": 50}).json()["items"]
        ]
        for order in ("descriptor", "descriptor_(A-Z)")
    }
    everything = [d for ds in LIBRARY.values() for d in ds]
    assert by_text["descriptor"] == sorted(everything)
    assert by_text["descriptor_(A-Z)"] == by_text["descriptor"]


def wait_for(client, job_id, key=KEY, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}", headers={"X-API-Key": key}).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['state']} after {timeout}s")


def test_upload_runs_an_ingest_job_then_delete(client, fake):
    new = {"banana": ["yellow peel"], "dog": ["floppy ears"]}  # banana's prompts are cached from frogs
    r = client.post(
        "/v1/libraries",
        headers={"Authorization": f"Bearer {KEY}"},
        files={"file": ("pets.json", json.dumps(new).encode(), "application/json")},
        data={"name": "pets"},
    )
    assert r.status_code == 202, r.text
    job = wait_for(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["result"]["version"] == 1
    assert (job["result"]["n_reused"], job["result"]["n_embedded"]) == (
        2,
        2,
    )  # the dog's descriptor and baseline prompts
    assert job["progress"]["done"] == job["progress"]["total"] == job["result"]["n_prompts"]
    assert {i["name"] for i in client.get("/v1/libraries").json()} == {"frogs", "pets"}
    r = client.delete("/v1/libraries/pets", headers={"X-API-Key": KEY})
    assert r.status_code == 200
    assert r.json()["deleted_versions"] == [1]
    assert {i["name"] for i in client.get("/v1/libraries").json()} == {"frogs"}
    assert client.get("/v1/libraries/pets").status_code == 404


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    deadline = time.monotonic() + 30
    while (r := client.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert r.json() == {"status": "ready", "model_loaded": True, "store": "ok"}
    assert client.get("/openapi.json").json()["info"]["title"] == "whyclip"


def test_concurrent_requests_share_one_encode(home, fake):
    """While the encoder is busy, waiting requests' images are gathered into one batch."""
    import threading

    entered, gate = threading.Event(), threading.Event()
    real = fake.embed_images

    def held(images, progress=None):
        entered.set()
        gate.wait(10)
        return real(images)

    fake.embed_images = held
    with TestClient(create_app(ServiceSettings())) as c:
        batcher = c.app.state.resources.batcher
        out = {}

        def ask(n, images):
            out[n] = explain(c, images)

        threads = [threading.Thread(target=ask, args=(0, [("a.png", FROG)]))]
        threads[0].start()
        assert entered.wait(10)
        threads += [threading.Thread(target=ask, args=(n, [("b.png", BANANA)] * n)) for n in (1, 2, 3)]
        for t in threads[1:]:
            t.start()
        while batcher.queued < 6:
            threads[-1].join(0.01)
        gate.set()
        for t in threads:
            t.join(10)
    assert fake.image_batches == [1, 6]
    assert [len(out[n].json()["explanations"]) for n in (0, 1, 2, 3)] == [1, 1, 2, 3]
    alone = explain_alone(home, BANANA)
    batched = out[3].json()["explanations"][2]["classes"]  # a batch of 6 rounds differently in the last bits
    assert [c["class"] for c in batched] == [c["class"] for c in alone["classes"]]
    assert [c["score"] for c in batched] == pytest.approx([c["score"] for c in alone["classes"]], abs=1e-6)


def explain_alone(home, data):
    (home / "one.png").write_bytes(data)
    (out,) = cli_json(["explain", str(home / "one.png"), "--library", "frogs", "--json"])
    return out


def test_explain_calibrated_answers_what_the_cli_prints(client, home):
    """calibrated=true: the same probabilities and calibration block as ``explain --calibrated``;
    without a stored calibration, a 422 that names the fix."""
    from tests.helpers.calibration_runs import plant_run
    from whyclip.store import Store

    (home / "frog.png").write_bytes(FROG)
    r = explain(client, [("frog.png", FROG)], calibrated="true")
    assert r.status_code == 422
    assert "whyclip calibrate --library frogs" in r.json()["error"]
    store = Store.open(home / "home")
    plant_run(store, library="frogs", n=300, t_true=3.0)
    done = CliRunner().invoke(cli, ["calibrate", "--library", "frogs", "--per-class-bias"])
    assert done.exit_code == 0, done.output
    path = str(home / "frog.png")
    expected = cli_json(["explain", path, "--library", "frogs", "--json", "--calibrated"])
    r = explain(client, [(path, FROG)], calibrated="true")
    assert r.status_code == 200, r.text
    assert r.json()["explanations"] == expected
    assert expected[0]["calibration"]["per_class_bias"]
    assert expected[0]["classes"][0]["uncalibrated_probability"] is not None
    plain = explain(client, [(path, FROG)]).json()["explanations"][0]
    assert plain["calibration"] is None
    assert plain["classes"][0]["uncalibrated_probability"] is None


def test_a_missing_name_split_is_looked_up_again_only_after_a_while(home, monkeypatch):
    """No eval has cached the bare descriptors: the note is kept for SPLIT_NOTE_TTL_S (the
    lookup cost every request 15 ms at 1,000 descriptors), then looked up again."""
    from whyclip.store.library import Library
    from whyclip.ui.api import dependencies as resources_module

    calls = []
    real = Library.bare_scorer
    monkeypatch.setattr(Library, "bare_scorer", lambda *a: calls.append(1) or real(*a))
    res = resources_module.Resources(ServiceSettings())
    try:
        lib = res.library("frogs")
        first = res.name_split(lib, res.encoder.cache_key)
        assert isinstance(first, str)
        assert "whyclip eval" in first
        assert res.name_split(lib, res.encoder.cache_key) == first
        assert len(calls) == 1
        monkeypatch.setattr(resources_module, "SPLIT_NOTE_TTL_S", 0.0)
        assert res.name_split(lib, res.encoder.cache_key) == first
        assert len(calls) == 2
    finally:
        res.close()


def test_explain_lists_at_most_the_asked_descriptors_and_counts_the_rest(client, home):
    """A shown class lists its best ``descriptors`` (default 50, at most the server's limit);
    the rest are counted and the score, which uses them all, is the CLI's."""
    (home / "frog.png").write_bytes(FROG)
    full = cli_json(["explain", str(home / "frog.png"), "--library", "frogs", "--json", "--top", "4"])[0]
    r = explain(client, [("frog.png", FROG)], top="4", descriptors="1")
    assert r.status_code == 200, r.text
    (got,) = r.json()["explanations"]
    for want, cut in zip(full["classes"], got["classes"], strict=True):
        assert cut["score"] == want["score"]
        assert cut["descriptors"] == want["descriptors"][:1]
        assert cut.get("descriptors_not_listed", 0) == max(0, len(want["descriptors"]) - 1)
    too_many = explain(client, [("frog.png", FROG)], descriptors="1001")
    assert too_many.status_code == 422
    assert "descriptors must be between 1 and 1000" in too_many.json()["error"]
