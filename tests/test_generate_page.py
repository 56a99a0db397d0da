"""The dashboard's Generate page through Streamlit's AppTest, against the real loopback
chat-completions server (tests/chat_server.py): class names in, the cleaning report shown,
the table edited, the library ingested (the fake encoder), and a second ask served from
the answer cache (counted at the server)."""

from __future__ import annotations

import secrets

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.chat_server import ChatServer
from tests.helpers.fakes import install_fake
from whyclip.store import Store

APP = str(ROOT / "ui" / "dashboard" / "streamlit_app.py")
KEY_ENV = "WHYCLIP_TEST_PAGE_KEY"


@pytest.fixture
def fake(monkeypatch, fresh_streamlit_caches):
    return install_fake(monkeypatch, ["stripes", "claws"])


def open_page(server: ChatServer) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("generate_page.py").run()
    at.text_area(key="generate_names").input("zebra\nlobster\ncopycat\nghost")
    at.text_input(key="generate_url").input(server.base_url)
    at.text_input(key="generate_model").input("tiny-llm")
    at.text_input(key="generate_key_env").input(KEY_ENV)
    return at


def test_generate_review_and_ingest(tmp_path, monkeypatch, fake):
    key = "sk-test-" + secrets.token_hex(8)
    monkeypatch.setenv(KEY_ENV, key)
    with ChatServer(key, behaviour={"ghost": ["empty"]}) as server:
        at = open_page(server)
        at.button(key="generate_go").click().run()
        assert not at.exception, at.exception
        assert len(server.requests) == 6  # ghost answers nothing: asked again twice
        metrics = {m.label: m.value for m in at.metric}
        # zebra 3 lines, lobster 3; copycat's answer copies two of the prompt's example lines
        # (dropped) and adds one of its own; ghost stays empty
        assert metrics == {"classes": "4", "descriptors kept": "7", "classes left empty": "1"}
        assert any("ghost" in w.value for w in at.warning)
        table = at.dataframe[0].value  # the per-step counts
        assert table.to_dict("records") == [{"step": "copied", "action": "dropped", "lines": 2}]
        assert key not in str([e.value for e in at.markdown]) + str([e.value for e in at.caption])
        at.text_input(key="generate_library_name").input("animals")
        at.text_input(key="generate_clip").input("fake")
        at.button(key="generate_ingest").click().run()
        assert not at.exception, at.exception
        assert any("library animals v1" in m.value for m in at.success), [m.value for m in at.error]
        info = Store.open(create=False).library("animals")
        assert (info.n_classes, info.n_descriptors, info.n_empty_classes) == (4, 7, 1)

        again = open_page(server)  # a new session asks the same: every answer from the cache
        again.button(key="generate_go").click().run()
        assert len(server.requests) == 6
        assert not again.exception


def test_no_names_and_no_key_say_what_to_do(monkeypatch, fake):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with ChatServer("k") as server:
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("generate_page.py").run()
        at.button(key="generate_go").click().run()
        assert any("Paste some class names" in i.value for i in at.info)
        at.text_area(key="generate_names").input("zebra")
        at.text_input(key="generate_url").input("https://llm.example.invalid/v1")
        at.text_input(key="generate_key_env").input(KEY_ENV)
        at.button(key="generate_go").click().run()
        assert not at.exception
        assert any("no API key" in e.value for e in at.error)
        assert server.requests == []
