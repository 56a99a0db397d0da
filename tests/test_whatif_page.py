"""The Audit page's what-if through Streamlit's AppTest on the planted world of
test_eval.py: toggling a descriptor and adding one shows what the what-if function
computes (and so what a re-ingest gives, tests/test_whatif.py), and saving publishes a
new version with its note while the run's version stays as it was."""

from __future__ import annotations

import os

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.fakes import FakeEncoder
from tests.helpers.planted import CONCEPTS, LIBRARY, write_dataset
from whyclip import ingest
from whyclip.ingest import ingest_library
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import run_eval
from whyclip.ingest.services.whatif import added_vectors
from whyclip.store.analysis.whatif import WhatIf, plan_edit
from whyclip.store.db.runs import find_run, load_run
from whyclip.ui.render.audit_report import pct

APP = str(ROOT / "ui" / "dashboard" / "streamlit_app.py")


@pytest.fixture
def planted(store, tmp_path, monkeypatch, fresh_streamlit_caches):
    enc = FakeEncoder(CONCEPTS, noise=0.01)
    monkeypatch.setattr(ingest, "load_encoder", lambda *args, **kwargs: enc)
    st.cache_resource.clear()
    st.cache_data.clear()
    ingest_library(store, LIBRARY, "planted", enc, template="bare")
    run_eval(store, store.load("planted"), read_dataset(write_dataset(tmp_path / "data")), enc, name="r1")
    yield store, enc
    st.cache_resource.clear()
    st.cache_data.clear()


def expected(store, enc, drops, adds) -> dict:
    lib = store.load("planted", 1)
    edit = plan_edit(lib, drops, adds)
    return WhatIf(load_run(store.engine, find_run(store.engine, "planted", "r1")), lib).answer(
        edit, added_vectors(store, lib, enc, edit.new_prompts)[0]
    )


def flips_shown(at: AppTest, key_column: str = "image") -> list[list[str]]:
    return [list(d.value[key_column]) for d in at.dataframe if key_column in d.value.columns]


def shown_paths(store, flips: list[dict]) -> list[str]:
    """The flips' images as the page names them: from the run's dataset folder."""
    dataset = find_run(store.engine, "planted", "r1").dataset
    return [os.path.relpath(f["path"], dataset) for f in flips]


def test_toggling_and_adding_descriptors_shows_the_exact_what_if_and_saves_a_version(planted):
    store, enc = planted
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("audit_page.py").run()
    assert not at.exception
    assert "What-if: edit a class's descriptors" in [h.value for h in at.subheader]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["top-1 before"] == metrics["top-1 after"] == "66.7%"
    assert metrics["McNemar p"] == "1"
    at.selectbox(key="whatif_class").set_value(1).run()  # banana
    at.checkbox(key="whatif_keep_1_0").uncheck().run()  # yellow peel
    assert not at.exception
    want = expected(store, enc, [("banana", "yellow peel")], [])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["top-1 after"] == pct(want["accuracy_after"]["accuracy"])
    assert metrics["McNemar p"] == f"{want['p_value']:.3g}"
    at.selectbox(key="whatif_class").set_value(3).run()  # sunflower: the banana toggle is gone with its widgets
    at.checkbox(key="whatif_keep_3_0").uncheck().run()
    at.checkbox(key="whatif_keep_3_1").uncheck().run()  # no descriptor left: the baseline prompt
    assert not at.exception
    gone = [("sunflower", "dark seeds"), ("sunflower", "round head")]
    want = expected(store, enc, gone, [])
    assert [f["path"].rsplit("/", 1)[1] for f in want["flips"]["wrong_to_right"]] == ["u1.png", "u2.png"]
    assert flips_shown(at) == [shown_paths(store, want["flips"]["wrong_to_right"])]  # right->wrong: none, no table
    assert flips_shown(at) == [["sunflower/u1.png", "sunflower/u2.png"]]
    (table,) = [d.value for d in at.dataframe if "image" in d.value.columns]
    scale = store.library("planted", 1).logit_scale  # scores as S, as explain shows them (issue 21, item 14)
    assert list(table.columns) == ["image", "true class", "before", "S before", "after", "S after"]
    assert list(table["S after"]) == pytest.approx([f["after_score"] * scale for f in want["flips"]["wrong_to_right"]])
    assert any("'sunflower' has no descriptor left" in i.value for i in at.info)
    at.text_input(key="whatif_add_3").input("yellow petals").run()
    assert not at.exception
    want = expected(store, enc, gone, [("sunflower", "yellow petals")])
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["top-1 after"] == pct(want["accuracy_after"]["accuracy"])
    assert metrics["McNemar p"] == f"{want['p_value']:.3g}"
    shown = flips_shown(at)
    assert shown == [
        shown_paths(store, want["flips"][k]) for k in ("wrong_to_right", "right_to_wrong") if want["flips"][k]
    ]
    assert want["statement"] in " ".join(m.value for m in at.markdown)
    assert enc.embedded.count("yellow petals") == 1
    at.text_input(key="whatif_note").input("sunflowers are yellow").run()
    at.button(key="whatif_save").click().run()
    assert not at.exception
    assert any("Saved as planted v2 with the note 'sunflowers are yellow'" in x.value for x in at.success)
    v2 = store.library("planted", 2)
    assert v2.note == "sunflowers are yellow"
    assert v2.n_descriptors == store.library("planted", 1).n_descriptors - 1
    assert store.library("planted", 1).note == ""
    assert expected(store, enc, gone, [("sunflower", "yellow petals")]) == want  # the run's version answers as before
    lib2 = store.load("planted", 2)
    assert [t for t, _ in lib2.class_texts(3)] == ["yellow petals"]
    at.run()
    assert not at.exception
    assert enc.embedded.count("yellow petals") == 1


def test_a_bad_addition_is_an_error_and_the_page_goes_on(planted):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("audit_page.py").run()
    at.text_input(key="whatif_add_0").input("big eyes").run()  # tree frog has it
    assert not at.exception
    assert any("already has the descriptor 'big eyes'" in e.value for e in at.error)
    assert "Descriptor hygiene" in [h.value for h in at.subheader]
