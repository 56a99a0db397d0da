"""The HTTP edge against a hostile or unlucky client (issue 20, item 7): what is refused
before a body is read (the Host, the key, the content type), a body over the limit however
it is sent, connections that never finish their headers, the docs page, and the upload
folders a killed server left. In process where the app alone shows it; the rest on a real
``whyclip serve`` on loopback (slow tier), one server for the module."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.helpers.server import serving
from tests.helpers.service import FROG, KEY, explain
from whyclip.store import AGGREGATES
from whyclip.ui.api import ServiceSettings, create_app
from whyclip.ui.api.job_board import HOST

READY_S = 60  # bounds on waiting, never timing assertions
HEADER_BOUND_S = 40  # the default header timeout is 10 s


# --- in process ---------------------------------------------------------------------------


def test_json_body_is_415_where_the_docs_say_so(client):
    """A JSON body to a multipart route is a wrong content type (415), not a set of missing
    fields (422); an upload without its key is refused for the key first."""
    as_json = {"content": b'{"library": "frogs"}', "headers": {"content-type": "application/json"}}
    for path in ("/v1/explain", "/v1/retrieve"):
        r = client.post(path, **as_json)
        assert (r.status_code, r.json()["status"]) == (415, 415), r.text
        assert "multipart/form-data" in r.json()["error"]
    r = client.post("/v1/libraries", content=as_json["content"], headers={**as_json["headers"], "X-API-Key": "x"})
    assert r.status_code == 403, r.text
    r = client.post("/v1/libraries", content=as_json["content"], headers={**as_json["headers"], "X-API-Key": KEY})
    assert r.status_code == 415, r.text


def test_aggregate_is_one_of_the_real_ones(client):
    """The schema lists the aggregates a client may send, and anything else (the ``topk``
    once documented) is a 422 that names the choices."""
    schema = client.get("/openapi.json").json()
    body = schema["components"]["schemas"]["Body_explain_v1_explain_post"]["properties"]["aggregate"]
    assert body["enum"] == list(AGGREGATES) == ["mean", "centroid", "max"]
    r = explain(client, [("f.png", FROG)], aggregate="topk")
    assert r.status_code == 422, r.text
    assert "'topk'" in r.json()["error"]
    assert "mean, centroid, max" in r.json()["error"]


def test_docs_off_unless_asked_for_and_the_schema_stays(home):
    """Swagger UI loads from a CDN: /docs (and /redoc) answer 404 unless the server is
    started with --docs, and /openapi.json is always there."""
    with TestClient(create_app(ServiceSettings(), warm=False)) as c:
        assert c.get("/docs").status_code == 404
        assert c.get("/redoc").status_code == 404
        assert c.get("/openapi.json").json()["info"]["title"] == "whyclip"
    with TestClient(create_app(ServiceSettings(docs=True), warm=False)) as c:
        assert c.get("/docs").status_code == 200


def _status_without_reading_the_body(app, method: str, path: str, headers: dict[str, str]) -> int:
    """Calls the ASGI app with a receive that fails the test if the body is asked for."""
    sent: list[dict] = []

    async def receive():
        raise AssertionError(f"{method} {path}: the body was read before the key was checked")

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"multipart/form-data; boundary=b"),
            (b"content-length", b"60000000"),
            *((k.lower().encode(), v.encode()) for k, v in headers.items()),
        ],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"]


def test_key_checked_before_the_body_is_read(home):
    """A route that needs a key refuses a missing or wrong one from the headers alone: a
    client without a key cannot make the server receive and parse a 60 MB body."""
    app = create_app(ServiceSettings(), warm=False)
    assert _status_without_reading_the_body(app, "POST", "/v1/libraries", {}) == 401
    assert _status_without_reading_the_body(app, "POST", "/v1/libraries", {"X-API-Key": "wrong"}) == 403
    assert _status_without_reading_the_body(app, "DELETE", "/v1/libraries/frogs", {"Authorization": "Bearer x"}) == 403
    app = create_app(ServiceSettings(keys_for_reads=True), warm=False)
    assert _status_without_reading_the_body(app, "POST", "/v1/explain", {}) == 401
    assert _status_without_reading_the_body(app, "POST", "/v1/retrieve", {"X-API-Key": "wrong"}) == 403


def _job(folder: Path, job_id: str, state: str, host: str, pid: int) -> None:
    record = {"id": job_id, "kind": "ingest", "library": "x", "state": state, "host": host, "pid": pid}
    (folder / f"{job_id}.json").write_text(json.dumps(record), encoding="utf-8")


def test_interrupted_uploads_removed_at_start(home):
    """A server killed mid-ingest leaves ``jobs/uploads/<id>/``; the next start removes the
    folders no running job needs (another replica's running job, or an upload another
    replica may be validating now, keeps its folder)."""
    jobs = Path(os.environ["WHYCLIP_HOME"]) / "jobs"
    dead = subprocess.Popen(["true"])
    dead.wait()
    folders = {}
    for job_id in ("killed", "finished", "alive", "elsewhere", "unclaimedold", "unclaimednew"):
        folders[job_id] = jobs / "uploads" / job_id
        folders[job_id].mkdir(parents=True)
        (folders[job_id] / "library.json").write_text("{}", encoding="utf-8")
    _job(jobs, "killed", "running", HOST, dead.pid)
    _job(jobs, "finished", "done", HOST, dead.pid)
    _job(jobs, "alive", "running", HOST, os.getpid())
    _job(jobs, "elsewhere", "running", "another-host", 1)
    hour_ago = time.time() - 3600
    os.utime(folders["unclaimedold"], (hour_ago, hour_ago))
    with TestClient(create_app(ServiceSettings())) as c:
        deadline = time.monotonic() + READY_S
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not get ready"
            time.sleep(0.05)
    left = {job_id for job_id, folder in folders.items() if folder.exists()}
    assert left == {"alive", "elsewhere", "unclaimednew"}


# --- a real server on loopback (slow tier) --------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model):
    home = tmp_path_factory.mktemp("edge") / "store"
    with serving(home, tiny_model) as (_proc, client):
        yield client


def _raw(client: httpx.Client) -> socket.socket:
    url = client.base_url
    return socket.create_connection((url.host, url.port), timeout=20)


def _response_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.slow
def test_chunked_body_over_the_limit_is_413(server):
    """A chunked body (no Content-Length) over the 64 MB default is refused with 413 the
    moment it passes the limit, as a declared one is: not a 400 from the body parser."""
    chunk = b"\0" * (1 << 20)

    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'
        for _ in range(66):
            yield chunk

    r = httpx.post(
        f"{server.base_url}/v1/explain",
        content=body(),
        headers={"content-type": "multipart/form-data; boundary=b"},
        timeout=120,
    )
    assert r.status_code == 413, r.text
    assert r.json()["status"] == 413
    assert "limit" in r.json()["error"]


@pytest.mark.slow
def test_write_without_a_key_refused_before_its_body(server):
    """An upload without a valid key is answered at once, from its headers: the server does
    not wait for (nor read) the 60 MB it announces."""
    for key_header, status in ((b"", b"401"), (b"X-API-Key: wrong\r\n", b"403")):
        for length in (b"Content-Length: 60000000\r\n", b"Transfer-Encoding: chunked\r\n"):
            with _raw(server) as sock:
                sock.sendall(
                    b"POST /v1/libraries HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: multipart/form-data; boundary=b\r\n" + length + key_header + b"\r\n"
                )
                head = _response_head(sock)
            assert head.startswith(b"HTTP/1.1 " + status), (key_header, length, head[:200])


@pytest.mark.slow
def test_foreign_host_refused_and_never_redirected_to(server):
    """Only localhost names (and --allowed-host ones) are answered: a DNS-rebinding page
    under another name gets a 400, and no redirect points at its host."""
    port = server.base_url.port
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
        for path in ("/v1/libraries", "/v1/libraries/", "/healthz"):
            r = server.get(path, headers={"Host": host}, follow_redirects=False)
            assert r.status_code == 400, (host, path, r.status_code, r.headers)
            assert "location" not in r.headers
            assert r.json()["status"] == 400
            assert "--allowed-host" in r.json()["error"]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST"):
        assert server.get("/v1/libraries", headers={"Host": host}).status_code == 200, host
    r = server.get("/v1/libraries/", headers={"Host": f"localhost:{port}"}, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"].startswith(f"http://localhost:{port}/")
    from whyclip.ui.cli.serve import trusted_hosts

    assert trusted_hosts("0.0.0.0", ("Example.org", "::2")) == (
        "localhost",
        "127.0.0.1",
        "[::1]",
        "example.org",
        "[::2]",
    )
    assert "10.1.2.3" in trusted_hosts("10.1.2.3")
    with TestClient(create_app(ServiceSettings(allowed_hosts=("whyclip.test",)), warm=False)) as c:
        assert c.get("http://whyclip.test/healthz").status_code == 200
        assert c.get("http://testserver/healthz").status_code == 400


@pytest.mark.slow
def test_connections_that_never_finish_their_headers_are_closed(server):
    """Sockets that send part of a request's headers and stop, one that trickles a byte a
    second, and a kept-alive one that starts a second request and stops: each is closed
    by the server within a bound (the header timeout, 10 s by default)."""
    socks = []
    for _ in range(3):
        s = _raw(server)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        socks.append(s)
    kept = _raw(server)
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert _response_head(kept).startswith(b"HTTP/1.1 200")
    kept.sendall(b"GET /healthz HTTP/1.1\r\n")
    socks.append(kept)
    trickler = _raw(server)
    trickler.sendall(b"GET /healthz HTTP/1.1\r\n")
    socks.append(trickler)
    open_ = set(socks)
    deadline = time.monotonic() + HEADER_BOUND_S
    try:
        while open_ and time.monotonic() < deadline:
            if trickler in open_:
                try:
                    trickler.sendall(b"X")
                except OSError:
                    open_.discard(trickler)
            # selectors (epoll), not select(): in a long test run the descriptors pass 1024
            with selectors.DefaultSelector() as watch:
                for s in open_:
                    watch.register(s, selectors.EVENT_READ)
                readable = [key.fileobj for key, _ in watch.select(1.0)]
            for s in readable:
                try:
                    if s.recv(65536) == b"":
                        open_.discard(s)
                except OSError:
                    open_.discard(s)
        assert not open_, f"{len(open_)} of {len(socks)} connections still open after {HEADER_BOUND_S} s"
    finally:
        for s in socks:
            s.close()
