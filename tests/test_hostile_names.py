"""Hostile names and errors that say little (issue 20, items 5 and 6): one names rule at every
surface, no NUL sent to the database, stored names printed escaped; a 404 that suggests a
few names, a one-library read whose cost does not grow with the store, no server path in an
answer, and an unexpected error logged with its traceback under an id the 500 gives."""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from tests.helpers.cli import invoke
from tests.helpers.service import FROG, KEY, explain
from whyclip.store import Store
from whyclip.store.db.schema import LibraryRow
from whyclip.ui.api import ServiceSettings, create_app

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL

HOSTILE = {
    "nul": "x\x00y",
    "escape": "evil\x1b]0;pwned\x07",
    "c1": "csi\x9b31m",
    "bidi": "txt\u202egnp.exe",
    "isolate": "a\u2066b",
    "space": " frogs",
    "long": "n" * 201,
}
AUTH = {"X-API-Key": KEY}


def _rows() -> tuple[Store, LibraryRow]:
    store = Store.open(create=False)  # the home fixture's store ($WHYCLIP_HOME, $WHYCLIP_DB)
    with Session(store.engine) as s:
        row = s.scalars(select(LibraryRow).where(LibraryRow.name == "frogs")).one()
        s.expunge(row)
    return store, row


def add_copies(names: list[str]) -> None:
    """Library rows under other names (copies of frogs v1's row: only listings read them)."""
    store, row = _rows()
    columns = [c.name for c in LibraryRow.__table__.columns if c.name != "id"]
    with Session(store.engine) as s, s.begin():
        for name in names:
            s.add(LibraryRow(**{**{c: getattr(row, c) for c in columns}, "name": name, "index_key": uuid.uuid4().hex}))
    store.engine.dispose()


def set_frogs(**values) -> None:
    store, _ = _rows()
    with store.engine.begin() as conn:
        conn.execute(update(LibraryRow).where(LibraryRow.name == "frogs").values(**values))
    store.engine.dispose()


def test_one_names_rule_at_every_surface(home, client, tmp_path):
    """Item 5: the CLI (one line, exit 1), HTTP (422) and the dashboard's check refuse each
    hostile name; nothing is published."""
    lib = tmp_path / "lib.json"
    lib.write_text(json.dumps({"toad": ["warty skin"]}), encoding="utf-8")
    for kind, name in HOSTILE.items():
        done = invoke("ingest", lib, "--library", name)
        assert done.returncode == 1, (kind, done.output)
        assert done.stderr.count("\n") == 1, (kind, done.stderr)
        assert "is not valid" in done.stderr, (kind, done.stderr)
        assert "\x1b" not in done.stderr
        assert "\u202e" not in done.stderr
        r = client.post(
            "/v1/libraries", files={"file": ("lib.json", lib.read_bytes())}, data={"name": name}, headers=AUTH
        )
        assert r.status_code == 422, (kind, r.text)
        assert "is not valid" in r.json()["error"], (kind, r.text)
    assert [i["name"] for i in client.get("/v1/libraries").json()] == ["frogs"]
    from whyclip.store import InputError, check_name  # what the dashboard's Generate page calls before an ingest

    for name in HOSTILE.values():
        with pytest.raises(InputError, match="is not valid"):
            check_name(name)


def test_the_dashboard_applies_the_same_rule(monkeypatch, fresh_streamlit_caches):
    """Item 5: the Generate page refuses a hostile library name with the store's one line
    (st.error), before any model loads, and stores nothing."""
    from streamlit.testing.v1 import AppTest

    from tests.helpers import ROOT
    from tests.helpers.chat_server import ChatServer
    from tests.helpers.fakes import install_fake

    install_fake(monkeypatch, ["stripes"])
    monkeypatch.setenv("WHYCLIP_TEST_NAMES_KEY", "sk-names")
    with ChatServer("sk-names") as server:
        at = AppTest.from_file(str(ROOT / "ui" / "dashboard" / "streamlit_app.py"), default_timeout=60).run()
        at.switch_page("generate_page.py").run()
        at.text_area(key="generate_names").input("zebra")
        at.text_input(key="generate_url").input(server.base_url)
        at.text_input(key="generate_model").input("tiny-llm")
        at.text_input(key="generate_key_env").input("WHYCLIP_TEST_NAMES_KEY")
        at.button(key="generate_go").click().run()
        at.text_input(key="generate_library_name").input(HOSTILE["escape"])
        at.text_input(key="generate_clip").input("fake")
        at.button(key="generate_ingest").click().run()
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "library name 'evil\\x1b]0;pwned\\x07' is not valid: it contains a control character (U+001B); use 1-200 "
        "characters with no control characters, slashes or spaces at either end"
    ]
    assert not [m.value for m in at.success if "library" in m.value]


def test_nul_never_reaches_the_database(client):
    """Item 5: a NUL in a path, a field or a search is a 422 or matches nothing, never a 500
    (PostgreSQL cannot hold NUL; SQLite's LIKE stops at it and matched every row)."""
    assert client.get("/v1/libraries/x%00y").status_code == 422
    assert client.get("/v1/libraries/x%00y/classes").status_code == 422
    assert explain(client, [("f.png", FROG)], library="x\x00y").status_code == 422
    assert client.delete("/v1/libraries/x%00y", headers=AUTH).status_code == 422
    for what in ("classes", "descriptors"):
        r = client.get(f"/v1/libraries/frogs/{what}", params={"search": "a\x00"})
        assert r.status_code == 200, r.text
        assert (r.json()["total"], r.json()["items"]) == (0, [])
        r = client.get(f"/v1/libraries/frogs/{what}", params={"search": "\x00"})
        assert (r.json()["total"], r.json()["items"]) == (0, [])


def test_stored_hostile_names_open_and_print_escaped(home):
    """Item 5: a store holding a name the rule now refuses still opens, lists, explains and
    deletes it; every printed name is escaped, so no escape sequence reaches the terminal."""
    evil = HOSTILE["escape"] + HOSTILE["bidi"]
    set_frogs(name=evil)
    listed = invoke("libraries", "--wide")  # the whole name: the default table may cut it
    assert listed.returncode == 0, listed.output
    assert "evil\\x1b]0;pwned\\x07txt\\u202egnp.exe" in listed.stdout
    image = home / "f.png"
    image.write_bytes(FROG)
    shown = invoke("explain", image, "--library", evil)
    assert shown.returncode == 0, shown.output
    for out in (listed, shown):
        assert "\x1b" not in out.output
        assert "\x07" not in out.output
        assert "\u202e" not in out.output
    gone = invoke("delete", evil, "--yes")
    assert gone.returncode == 0, gone.output
    assert "\x1b" not in gone.output
    assert "deleted library evil\\x1b]0;pwned\\x07" in gone.stdout


def test_a_404_suggests_at_most_three_close_names(home, client):
    """Item 6: not every library, only a few close ones."""
    add_copies(["frog", "frogz", "frogs-old", "frogs2", *[f"zebra{i}" for i in range(30)]])
    error = client.get("/v1/libraries/frogss").json()["error"]
    assert error.startswith("no library 'frogss'; did you mean ")
    assert error.count("'") == 2 + 2 * 3
    assert "zebra" not in error
    assert "zebra" not in client.get("/v1/libraries/nothing-like-it").json()["error"]


def test_a_one_library_read_costs_the_same_whatever_the_store_holds(home, client):
    """Item 6: GET /v1/libraries/{name} reads that library's rows, never every version of
    every library: the same statements with 1 library as with 41."""
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_rest):
        statements.append(statement)

    from sqlalchemy.engine import Engine

    def measured() -> int:
        statements.clear()
        event.listen(Engine, "before_cursor_execute", count)
        try:
            r = client.get("/v1/libraries/frogs")
        finally:
            event.remove(Engine, "before_cursor_execute", count)
        assert r.status_code == 200
        assert [v["version"] for v in r.json()["versions"]] == [1]
        return len(statements)

    measured()  # the first request opens the store
    alone = measured()
    add_copies([f"lib{i}" for i in range(40)])
    assert measured() == alone


def test_no_server_path_in_any_answer(home, client, tmp_path):
    """Item 6: the encoder is shown by its id and a name that is not a path; an upload's
    warnings name the uploaded file, not where the server kept it."""
    set_frogs(encoder_name=f"{home}/models/vitb32")
    listing = client.get("/v1/libraries").text
    one = client.get("/v1/libraries/frogs").text
    answer = explain(client, [("f.png", FROG)]).json()["explanations"][0]
    assert answer["encoder"] == "vitb32"
    assert answer["encoder_id"]
    for body in (listing, one, json.dumps(answer)):
        assert str(home) not in body
        assert '"vitb32"' in body
    lib = json.dumps({"toad": ["warty skin", "warty skin"]}).encode()
    r = client.post("/v1/libraries", files={"file": ("mine.json", lib)}, data={"name": "toads"}, headers=AUTH)
    assert r.status_code == 202, r.text
    for _ in range(200):
        job = client.get(f"/v1/jobs/{r.json()['id']}").json()
        if job["state"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job["state"] == "done", job
    warnings = job["result"]["warnings"]
    assert warnings, job
    assert all(w.startswith("mine.json: ") for w in warnings), warnings
    assert str(home) not in json.dumps(job)
    assert "uploads" not in json.dumps(job)


def test_an_unexpected_error_is_logged_with_its_traceback_and_id(home, monkeypatch, caplog):
    """Item 6: the 500 gives a request id; the log has that id and the traceback, also as the
    command line's log format writes it (it dropped exception details)."""
    from whyclip.ui.api import library_admin
    from whyclip.ui.cli.main import _LowerLevelFormatter

    def boom(*_args):
        raise RuntimeError("boom at /srv/secret")

    monkeypatch.setattr(library_admin, "library_versions", boom)
    with TestClient(create_app(ServiceSettings()), raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR):
        r = c.get("/v1/libraries/frogs")
    assert r.status_code == 500
    assert "secret" not in r.text
    request_id = r.json()["error"].rsplit(" ", 1)[-1]
    assert len(request_id) == 16
    assert r.headers["x-request-id"] == request_id
    (record,) = [rec for rec in caplog.records if request_id in rec.getMessage()]
    written = _LowerLevelFormatter().format(record)
    assert written.startswith("error: unexpected error in GET /v1/libraries/frogs, request id " + request_id)
    assert "Traceback (most recent call last)" in written
    assert "RuntimeError: boom at /srv/secret" in written
