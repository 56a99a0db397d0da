"""Uploads and ingest jobs against a hostile or unlucky client (issue 20, items 3 and 4 and
the index factory of reproduction 2): validation linear in the library's size and run in
the job, a 202 at once, no duplicate version from a retry, no library brought back by a
job after a DELETE, and an index factory string that cannot decide the server's memory."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient

from tests.helpers.service import KEY, wait_for_job
from whyclip.ingest.readers import parse_mapping
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.api.routes import ingest_job

PETS = {"cat": ["whiskers", "a long tail"], "dog": ["floppy ears"]}


def upload(client, data: bytes = json.dumps(PETS).encode(), name: str = "pets", **form):
    files = {"file": ("pets.json", data, "application/json")}
    return client.post("/v1/libraries", headers={"X-API-Key": KEY}, files=files, data={"name": name, **form})


class CountingStr(str):
    """A descriptor that counts the equality tests made on it: a scan of a list makes one
    per element, a hash set none (the hashes of distinct texts differ)."""

    compared = 0

    def __eq__(self, other):
        CountingStr.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_validation_is_linear_in_a_class_s_descriptors():
    """Item 3: duplicates are found by hashing, not by scanning the class's list (which made
    a one-class library of n descriptors cost n^2/2 comparisons: 4.5 million here)."""
    n = 3000
    descriptors = [CountingStr(f"descriptor {i}") for i in range(n)] + [CountingStr("descriptor 7")]
    CountingStr.compared = 0
    parsed = parse_mapping({"one class": descriptors})
    assert CountingStr.compared < n  # one comparison for the duplicate, whatever n is
    assert len(parsed.classes[0][1]) == n
    assert len(parsed.warnings) == 1
    assert "duplicate descriptor 'descriptor 7'" in parsed.warnings[0]


def test_an_upload_answers_202_at_once_and_validates_in_the_job(client, monkeypatch):
    """Item 4: the request only stores the file; reading and validating it happen in the job's
    thread (off the event loop and the request), so a request timeout can never leave a job
    whose id the client lacks. A bad file is a failed job that names the uploaded file."""
    threads = []
    real = ingest_job.read_library

    def spy(path):
        threads.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(ingest_job, "read_library", spy)
    r = upload(client, data=b'{"cat": ["whiskers"], "cat": ["again"]}')
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    job = wait_for_job(client, r.json()["id"])
    assert job["state"] == "failed", job
    assert "pets.json" in job["error"], job
    assert "duplicate class" in job["error"], job
    assert threads
    assert all(name.startswith("whyclip-ingest") for name in threads), threads


@pytest.mark.usefixtures("database")  # and on PostgreSQL in the slow tier
def test_a_retried_upload_publishes_no_duplicate_version(client, fake):
    """Item 4: the same file (by its sha256) under the same name and settings is a no-op that
    names the existing version; a changed setting is a new version."""
    first = wait_for_job(client, upload(client).json()["id"])
    assert first["state"] == "done", first
    assert first["result"]["version"] == 1, first
    retry = wait_for_job(client, upload(client).json()["id"])
    assert retry["state"] == "done", retry
    assert retry["result"]["version"] == 1
    assert retry["result"]["n_embedded"] == 0
    assert "nothing was published" in retry["result"]["note"]
    assert [v["version"] for v in client.get("/v1/libraries/pets").json()["versions"]] == [1]
    other = wait_for_job(client, upload(client, template="bare").json()["id"])
    assert other["state"] == "done", other
    assert other["result"]["version"] == 2, other
    assert "note" not in other["result"], other


def test_two_identical_uploads_at_once_publish_one_version(home, fake):
    """Item 4: a retry sent while the first upload's job still runs (two ingest threads here;
    or two replicas): the store compares the content and settings in the publishing
    transaction, so the second job publishes nothing and names the first's version."""
    entered, gate = threading.Semaphore(0), threading.Event()
    real = fake.embed_texts

    def held(texts, progress=None):
        entered.release()
        assert gate.wait(30)
        return real(texts, progress)

    fake.embed_texts = held
    with TestClient(create_app(ServiceSettings(ingest_workers=2))) as client:
        ids = [upload(client).json()["id"] for _ in range(2)]
        for _ in ids:  # both jobs are past their first check, embedding
            assert entered.acquire(timeout=30)
        gate.set()
        jobs = [wait_for_job(client, i) for i in ids]
        assert [j["state"] for j in jobs] == ["done", "done"], jobs
        assert [j["result"]["version"] for j in jobs] == [1, 1], jobs
        assert sum("note" in j["result"] for j in jobs) == 1, jobs
        assert [v["version"] for v in client.get("/v1/libraries/pets").json()["versions"]] == [1]


@pytest.mark.usefixtures("database")  # and on PostgreSQL in the slow tier
def test_a_delete_during_a_running_job_is_not_undone_by_it(client, fake):
    """Item 4: a DELETE that empties a library while a job on it runs wins: the job publishes
    nothing and says why; the library stays deleted (before: the job published v2 and the
    library came back)."""
    entered, gate = threading.Event(), threading.Event()
    real = fake.embed_texts

    def held(texts, progress=None):
        entered.set()
        assert gate.wait(30)
        return real(texts, progress)

    fake.embed_texts = held
    r = upload(client, data=json.dumps({"tree frog": ["webbed toes never seen before"]}).encode(), name="frogs")
    assert r.status_code == 202, r.text
    assert entered.wait(30)
    deleted = client.delete("/v1/libraries/frogs", headers={"X-API-Key": KEY})
    assert deleted.status_code == 200, deleted.text
    assert deleted.json()["deleted_versions"] == [1], deleted.text
    gate.set()
    job = wait_for_job(client, r.json()["id"])
    assert job["state"] == "failed", job
    assert "deleted" in job["error"], job
    assert client.get("/v1/libraries/frogs").status_code == 404
    assert "frogs" not in {i["name"] for i in client.get("/v1/libraries").json()}


def test_the_index_factory_string_cannot_decide_the_server_s_memory(client, home):
    """Reproduction 2: a factory whose numbers alone ask for too much is a 422 before the 202
    (FAISS allocated ten million inverted lists on creation); one the library is too small
    to train is a failed job that says so, before anything is embedded or allocated."""
    r = upload(client, index="IVF10000000,Flat")
    assert r.status_code == 422, r.text
    assert "10,000,000" in r.json()["error"]
    assert "limit" in r.json()["error"]
    assert not list((home / "home" / "jobs").glob("*.json"))  # no job was started
    r = upload(client, index="IVF64,Flat")
    assert r.status_code == 202, r.text
    job = wait_for_job(client, r.json()["id"])
    assert job["state"] == "failed", job
    assert "at least 64 descriptors" in job["error"], job
    assert "has 3" in job["error"], job
