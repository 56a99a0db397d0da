"""Bad input to every endpoint: a 4xx whose JSON body names the problem, never a 5xx,
nothing written; and the API key check (never echoed)."""

from __future__ import annotations

import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.helpers.service import FROG, KEY, explain, wait_for_job
from whyclip.ui.api import Limits, ServiceSettings, create_app

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def problem(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["error"], str)
    for w in words:
        assert w.lower() in body["error"].lower(), body["error"]
    return body["error"]


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height)).save(buf, format="PNG")
    return buf.getvalue()


def test_explain_bad_input(client):
    problem(explain(client, [("x.png", b"hello, not an image")]), 422, "x.png", "not an image")
    problem(explain(client, [("t.png", FROG[:40])]), 422, "t.png", "truncated")
    problem(explain(client, [("e.png", b"")]), 422, "empty")
    problem(explain(client, [("f.png", FROG)], library="nope"), 404, "'nope'")
    problem(explain(client, [("f.png", FROG)], library="frog"), 404, "'frog'", "did you mean 'frogs'")
    problem(explain(client, [("f.png", FROG)], version="9"), 404, "version 9")
    problem(explain(client, [("f.png", FROG)], compare=["tree frog", "toad"]), 422, "toad")
    problem(explain(client, [("f.png", FROG)], compare=["tree frog"]), 422, "compare", "two")
    problem(explain(client, [("f.png", FROG)], aggregate="median"), 422, "aggregate", "median")
    problem(explain(client, [("f.png", FROG)], top="0"), 422, "top")
    problem(explain(client, [("f.png", FROG)], top="many"), 422, "top")
    problem(client.post("/v1/explain", files={"library": (None, "frogs")}), 422, "image", "missing")
    problem(client.post("/v1/explain", files={"image": ("f.png", FROG)}), 422, "library", "missing")
    problem(
        client.post("/v1/explain", content=b'{"library": "frogs"}', headers={"content-type": "application/json"}), 415
    )
    problem(client.post("/v1/explain", content=b"library=frogs", headers={"content-type": "text/plain"}), 415)


def test_limits(home):
    limits = Limits(max_body_bytes=200_000, max_images=2, max_image_pixels=100 * 100, max_image_bytes=150_000)
    with TestClient(create_app(ServiceSettings(limits=limits))) as c:
        problem(explain(c, [("big.png", png(101, 100))]), 413, "big.png", "10,100 pixels", "bomb")
        problem(explain(c, [(f"{i}.png", FROG) for i in range(3)]), 413, "3 images", "limit is 2")
        problem(explain(c, [("huge.png", b"\x89PNG" + b"0" * 160_000)]), 413, "huge.png", "150,000 bytes")
        problem(explain(c, [("a.png", b"0" * 120_000), ("b.png", b"0" * 120_000)]), 413, "request body", "200,000")
        assert explain(c, [("ok.png", png(100, 100))]).status_code == 200


def test_bomb_under_the_default_limit_of_the_reader(client):
    """A PNG whose header claims 50,000 x 50,000 pixels is refused from the header alone."""
    import zlib

    small = png(1, 1)
    ihdr = b"IHDR" + (50_000).to_bytes(4, "big") * 2 + small[24:29]
    bomb = small[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + small[33:]
    problem(explain(client, [("bomb.png", bomb)]), 413, "bomb.png", "bomb")


def test_retrieve_bad_input(client):
    problem(client.post("/v1/retrieve", data={"library": "frogs"}, files={"x": ("", b"")}), 422, "exactly one query")
    both = client.post("/v1/retrieve", data={"library": "frogs", "text": "peel"}, files={"image": ("f.png", FROG)})
    problem(both, 422, "exactly one query")
    problem(client.post("/v1/retrieve", data={"library": "nope", "text": "peel"}, files={"x": ("", b"")}), 404, "nope")
    problem(
        client.post("/v1/retrieve", data={"library": "frogs", "text": "peel", "k": "0"}, files={"x": ("", b"")}),
        422,
        "k",
    )
    problem(
        client.post("/v1/retrieve", data={"library": "frogs"}, files={"image": ("x.png", b"junk")}), 422, "not an image"
    )


def test_library_reads_bad_input(client):
    problem(client.get("/v1/libraries/nope"), 404, "nope")
    problem(client.get("/v1/libraries/frogs/classes", params={"version": 3}), 404, "version 3")
    problem(client.get("/v1/libraries/frogs/classes", params={"limit": 0}), 422, "limit")
    problem(client.get("/v1/libraries/frogs/descriptors", params={"order": "random"}), 422, "order")
    problem(client.get("/v1/libraries/frogs/descriptors", params={"offset": -1}), 422, "offset")
    problem(client.get("/v1/jobs/0123abc"), 404, "no job")
    problem(client.get("/v1/jobs/..%2F..%2Fetc"), 404)


def upload(client, name="pets", filename="pets.json", data=b'{"cat": ["whiskers"]}', key=KEY, **form):
    headers = {"X-API-Key": key} if key else {}
    return client.post("/v1/libraries", headers=headers, files={"file": (filename, data)}, data={"name": name, **form})


def test_upload_bad_input_writes_nothing(client, home):
    problem(upload(client, filename="pets.txt"), 415, "pets.txt", ".json")
    problem(upload(client, data=b""), 422, "empty")
    problem(upload(client, name="a/b"), 422, "library name")
    problem(upload(client, template="{nothing}"), 422)
    problem(upload(client, baseline="no field"), 422, "baseline")
    problem(upload(client, index="NoSuchIndex"), 422, "NoSuchIndex")
    problem(upload(client, commit_every="0"), 422, "commit_every")
    assert not list((home / "home" / "jobs").glob("*.json"))  # no job was started
    # the file's content is read in the job (the 202 comes at once): a bad file is a failed job
    r = upload(client, data=b"{not json")
    assert r.status_code == 202, r.text
    job = wait_for_job(client, r.json()["id"])
    assert job["state"] == "failed", job
    assert "pets.json" in job["error"], job
    assert "not valid JSON" in job["error"], job
    assert str(home) not in job["error"]  # the server's paths stay private
    assert [i["name"] for i in client.get("/v1/libraries").json()] == ["frogs"]
    assert not any((home / "home" / "jobs" / "uploads").iterdir())


def test_keys(client):
    problem(upload(client, key=None), 401, "api key is needed")
    error = problem(upload(client, key="wrong-key"), 403, "not valid")
    assert "wrong-key" not in error
    problem(client.delete("/v1/libraries/frogs"), 401)
    problem(client.delete("/v1/libraries/frogs", headers={"Authorization": "Bearer nope"}), 403)
    problem(client.delete("/v1/libraries/frogs", headers={"X-API-Key": KEY}, params={"version": 7}), 404, "version 7")
    assert client.get("/v1/libraries").status_code == 200  # reads need no key by default


def test_keys_for_reads_and_key_file(home, tmp_path, monkeypatch):
    monkeypatch.delenv("WHYCLIP_API_KEYS")
    key_file = tmp_path / "keys.txt"
    key_file.write_text("# service keys\nfile-key-1\n\nfile-key-2\n")
    with TestClient(create_app(ServiceSettings(key_file=str(key_file), keys_for_reads=True))) as c:
        problem(c.get("/v1/libraries"), 401)
        problem(c.get("/v1/libraries", headers={"X-API-Key": KEY}), 403)  # the env key is gone
        assert c.get("/v1/libraries", headers={"X-API-Key": "file-key-2"}).status_code == 200
        assert c.get("/healthz").status_code == 200  # health stays open


def test_no_keys_configured_refuses_writes(home, monkeypatch):
    monkeypatch.delenv("WHYCLIP_API_KEYS")
    with TestClient(create_app(ServiceSettings())) as c:
        problem(upload(c, key="anything"), 403, "accepts no api keys")


def test_full_queue_answers_503_with_retry_after(home, fake):
    import threading

    entered, gate = threading.Event(), threading.Event()
    real = fake.embed_images

    def held(images, progress=None):  # the encoder busy until the test lets it go
        entered.set()
        gate.wait(10)
        return real(images)

    fake.embed_images = held
    with TestClient(create_app(ServiceSettings(queue_images=1, max_batch=1))) as c:
        batcher = c.app.state.resources.batcher
        results = []
        threads = [threading.Thread(target=lambda n=n: results.append(explain(c, [(f"{n}.png", FROG)]))) for n in "ab"]
        threads[0].start()
        assert entered.wait(10)  # the first image is in the encoder
        threads[1].start()
        while batcher.queued == 0:  # the second waits in the queue, which is now full
            threads[1].join(0.01)
        r = explain(c, [("c.png", FROG)])
        gate.set()
        for t in threads:
            t.join(10)
    problem(r, 503, "busy")
    assert r.headers["Retry-After"] == "1"
    assert sorted(x.status_code for x in results) == [200, 200]


def test_request_time_and_library_size_limits(home, fake):
    import threading

    gate = threading.Event()
    real = fake.embed_images
    fake.embed_images = lambda images, progress=None: (gate.wait(10), real(images))[1]
    limits = Limits(request_seconds=0.5, max_library_bytes=100)
    try:
        with TestClient(create_app(ServiceSettings(limits=limits))) as c:
            _ = c.app.state.resources.batcher  # the model loaded before the timed request
            problem(explain(c, [("slow.png", FROG)]), 504, "longer than 0.5 s")  # the encoder is held for 10 s
            gate.set()
            problem(upload(c, data=b'{"cat": ["' + b"w" * 200 + b'"]}'), 413, "pets.json", "100 bytes")
    finally:
        gate.set()
