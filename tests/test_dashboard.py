"""The dashboard pages through Streamlit's AppTest, with the deterministic fake encoder:
what is rendered equals what the store returns, and bad input never breaks the app."""

from __future__ import annotations

import struct
import tempfile
import zlib

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.fakes import install_fake, planted_png
from whyclip import ingest
from whyclip.ingest import ingest_library

APP = str(ROOT / "ui" / "dashboard" / "streamlit_app.py")
CONCEPTS = ["protruding eyes", "bright green colour", "tree frog", "tailed frog", "brown or olive skin"]
LIBRARY = {
    "tree frog": ["sticky toe pads", "protruding eyes", "wet and hairless nose", "bright green colour"],
    "tailed frog": ["brown or olive skin", "a short tail-like extension", "protruding eyes"],
    "banana": ["yellow peel", "a long curved shape"],
    "mystery": [],
}


@pytest.fixture
def fake(monkeypatch, fresh_streamlit_caches):
    return install_fake(monkeypatch, CONCEPTS)


@pytest.fixture
def frogs(store, fake):
    ingest_library(store, LIBRARY, "frogs", fake)
    return store


def png(concepts: list[str]) -> bytes:
    return planted_png(concepts, size=32)


def bomb_png(side: int = 60_000) -> bytes:
    """A valid PNG header claiming side x side pixels: Pillow refuses it as a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def run_explain(uploads: list[tuple[str, bytes]]) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if uploads:
        at.file_uploader[0].set_value([(name, data, "image/png") for name, data in uploads]).run()
    return at


def test_explain_page_renders_what_the_store_returns(frogs, fake):
    at = run_explain([("frog.png", png(["protruding eyes", "bright green colour"]))])
    assert not at.exception
    lib = frogs.load("frogs")
    picture = ingest.images.read_image_bytes("frog.png", png(["protruding eyes", "bright green colour"]))
    (exp,) = lib.explain(fake.embed_images([picture])[0], ["frog.png"], top=5)
    assert next(h.value for h in at.subheader) == "Predicted: tree frog"
    tables = [d.value for d in at.dataframe]
    classes = tables[0]
    assert list(classes["class"]) == [c.name for c in exp.classes]
    assert list(classes["score"]) == pytest.approx([c.score for c in exp.classes], abs=1e-6)
    assert list(classes["probability"]) == pytest.approx([c.probability for c in exp.classes], abs=1e-6)
    descriptors = tables[1]  # the predicted class, ranked
    assert list(descriptors["descriptor"]) == [d.descriptor for d in exp.classes[0].descriptors]
    assert set(descriptors["descriptor"][:2]) == {"protruding eyes", "bright green colour"}
    assert list(descriptors["S"]) == pytest.approx([d.scaled for d in exp.classes[0].descriptors], abs=1e-4)
    contrast = next(t for t in tables if "contribution" in t.columns)
    assert list(contrast["descriptor"]) == [r.descriptor for r in exp.contrast.rows]
    assert list(contrast["contribution"]) == pytest.approx([r.contribution * 100 for r in exp.contrast.rows], abs=1e-4)
    retrieved = tables[-1]
    assert list(retrieved["descriptor"]) == [r.descriptor for r in exp.retrieved]
    assert at.get("download_button")


def test_samples_are_drawn_inside_the_data_directory(frogs, monkeypatch, tmp_path):
    """Issue 21, item 19: the picker's drawn samples go where the demo draws them, in the
    data directory's demo-images/, not into the system's temporary folder."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    drawn = sorted(p.name for p in (frogs.home / "demo-images").glob("*.png"))
    assert "tree_frog.png" in drawn
    assert list(system_tmp.iterdir()) == []


def test_contrast_classes_are_selectable(frogs):
    at = run_explain([("frog.png", png(["protruding eyes"]))])
    pick = {box.label: box for box in at.selectbox}
    pick["Contrast class A"].set_value("tailed frog")
    pick["with class B"].set_value("banana").run()
    assert not at.exception
    assert "tailed frog vs banana, descriptor by descriptor" in [h.value for h in at.subheader]
    contrast = next(d.value for d in at.dataframe if "contribution" in d.value.columns)
    assert set(contrast.columns) >= {"S under tailed frog", "S under banana"}


BAD = {
    "text.png": (b"this is not an image", "not an image"),
    "truncated.png": (png(["tree frog"])[:70], "truncated or corrupt"),
    "bomb.png": (bomb_png(), "too many pixels"),
    "empty.png": (b"", "empty file"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_images_give_an_error_and_the_app_keeps_working(frogs, name):
    data, message = BAD[name]
    at = run_explain([(name, data), ("frog.png", png(["protruding eyes", "bright green colour"]))])
    assert not at.exception
    assert any(message in e.value and name in e.value for e in at.error)
    assert "Predicted: tree frog" in [h.value for h in at.subheader]  # the good image still explained


def test_no_store_and_no_library_say_what_to_do(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("WHYCLIP_HOME", str(tmp_path / "nothing-here"))
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "whyclip demo" in at.info[0].value
    from whyclip.store import Store

    Store.open(tmp_path / "nothing-here")  # a store with no library
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    assert "No libraries yet" in at.info[0].value


def test_a_library_without_descriptors_still_explains(store, fake):
    ingest_library(store, {"a": [], "b": []}, "bare", fake)
    at = run_explain([("frog.png", png(["tree frog"]))])
    assert not at.exception
    assert any("no descriptors" in i.value for i in at.info)
    assert at.subheader[0].value.startswith("Predicted: ")


def test_library_page_metadata_search_and_highlights(frogs):
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("library_page.py").run()
    assert not at.exception
    info = frogs.library("frogs")
    assert [m.value for m in at.metric] == [str(v) for v in (1, 4, 9, info.n_prompts, 1)]
    rows = at.dataframe[1].value
    assert list(rows["descriptor"]) == [d for descs in LIBRARY.values() for d in descs]  # label order
    eyes = rows[rows["descriptor"] == "protruding eyes"]
    assert list(eyes["classes sharing it"]) == [2, 2]
    at.text_input(key="d_search").set_value("EYES").run()
    assert list(at.dataframe[1].value["class"]) == ["tree frog", "tailed frog"]
    at.button_group(key="view").set_value("Classes").run()
    classes = at.dataframe[1].value
    assert list(classes["class"]) == list(LIBRARY)
    assert list(classes["descriptors"]) == [4, 3, 2, 0]
    at.button_group(key="view").set_value("Shared descriptors").run()
    assert not at.exception
    shared = at.dataframe[1].value
    assert list(shared["descriptor"]) == ["protruding eyes"]
    assert list(shared["classes"]) == [2]


def reliability_charts(at: AppTest) -> int:
    return sum('"reliability diagram"' in e.proto.spec for e in at.get("vega_lite_chart"))


def test_audit_page_shows_a_stored_run(store, fake, tmp_path):
    """The Audit page renders exactly what ``whyclip audit`` computes for the planted run."""
    from tests.helpers.fakes import FakeEncoder
    from tests.helpers.planted import CONCEPTS as PLANTED
    from tests.helpers.planted import LIBRARY as PLANTED_LIBRARY
    from tests.helpers.planted import write_dataset
    from whyclip.ingest.datasets import read_dataset
    from whyclip.ingest.services.evaluate import run_eval
    from whyclip.store.analysis.audit import AuditSettings, audit
    from whyclip.store.db.runs import load_run

    enc = FakeEncoder(PLANTED, noise=0.01)
    ingest_library(store, PLANTED_LIBRARY, "planted", enc, template="bare")
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("audit_page.py").run()
    assert not at.exception
    assert "No evaluation runs" in at.info[0].value
    report = run_eval(store, store.load("planted"), read_dataset(write_dataset(tmp_path / "data")), enc, name="r1")
    expected = audit(load_run(store.engine, report.run), store.load("planted"), AuditSettings())
    at.run()
    assert not at.exception
    rw = expected["controls"]["random_words"]
    assert [m.value for m in at.metric][:4] == [
        "66.7%",
        "100.0%",
        f"{100 * rw['accuracy_mean']:.1f}% ± {100 * rw['accuracy_sd']:.1f}",
        "100.0%",
    ]
    # no calibration stored: the library's own probabilities, with their reliability diagram
    assert [m.value for m in at.metric][4:6] == [
        f"{expected['calibration']['ece_before']:.3f}",
        f"{expected['calibration']['nll_before']:.3f}",
    ]
    assert any("whyclip calibrate --library planted" in i.value for i in at.info)
    assert "Calibration" in [h.value for h in at.subheader]
    assert reliability_charts(at) == 1
    shown = [x.value for x in (*at.success, *at.warning)]
    for key in ("baseline", "name_description", "swap", "random_words", "shuffled_descriptor_words"):
        assert any(expected["controls"][key]["verdict"] in v for v in shown), key
    assert [e.label for e in at.expander if "predicted" in e.label] == [
        "2 x predicted banana for sunflower",
        "1 x predicted tree frog for banana",
    ]
    drivers = next(d.value for d in at.dataframe if "top_correct" in d.value.columns)
    shown = [r for r in expected["drivers"] if r["top_correct"] + r["top_wrong"]]
    assert list(drivers["text"]) == [r["text"] for r in shown]
    assert list(drivers["top_correct"]) == [r["top_correct"] for r in shown]
    at.selectbox(key="audit_agg").set_value("max").run()
    assert not at.exception
    assert at.metric[0].value == f"{100 * expected['accuracy'][2]['top1']:.1f}%"


def test_audit_and_explain_pages_show_a_stored_calibration(store, fake, tmp_path, monkeypatch):
    """A calibrated library: the Audit page shows ECE before and after (the stored held-out
    figures) with the reliability diagram; the Explain page's toggle gives the calibrated
    probabilities that ``explain --calibrated`` gives."""
    import json

    from click.testing import CliRunner

    from tests.helpers.calibration_runs import plant_run
    from whyclip.ui.cli.main import cli

    ingest_library(store, LIBRARY, "frogs", fake)
    plant_run(store, library="frogs", n=200, t_true=3.0)
    done = CliRunner().invoke(cli, ["calibrate", "--library", "frogs", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("audit_page.py").run()
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values["ECE before"] == f"{report['ece_before']:.3f}"
    assert values["ECE after"] == f"{report['ece_after']:.3f}"
    assert values["temperature"] == f"{report['temperature']:.3g}"
    assert reliability_charts(at) == 1

    frog = png(["protruding eyes", "bright green colour"])
    (tmp_path / "frog.png").write_bytes(frog)
    expected = json.loads(
        CliRunner()
        .invoke(cli, ["explain", str(tmp_path / "frog.png"), "--library", "frogs", "--json", "--calibrated"])
        .stdout
    )
    at = run_explain([("frog.png", frog)])
    at.toggle(key="explain_calibrated").set_value(True).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["probability"]) == pytest.approx([c["probability"] for c in expected["classes"]], abs=1e-9)
    assert list(table["uncalibrated probability"]) == pytest.approx(
        [c["uncalibrated_probability"] for c in expected["classes"]]
    )
    assert any("Probabilities calibrated" in c.value for c in at.caption)


def test_contrast_view_shows_stored_pair_descriptors(frogs, fake):
    """Pair descriptors stored for (tree frog, tailed frog) appear under their contrast, with
    the same similarities the library computes; another pair shows none."""
    from whyclip.ingest.services.pair_ingest import PairsFile, store_pairs

    lib = frogs.load("frogs")
    feature = {"attribute": "colour", "a": "bright green colour", "b": "brown or olive skin"}
    pf = PairsFile("pairs.json", {"model": "m"}, [{"a": "tree frog", "b": "tailed frog", "features": [feature]}])
    store_pairs(frogs, lib, pf, fake)
    data = png(["protruding eyes", "bright green colour"])
    at = run_explain([("frog.png", data)])
    pick = {box.label: box for box in at.selectbox}
    pick["Contrast class A"].set_value("tree frog")
    pick["with class B"].set_value("tailed frog").run()
    assert not at.exception
    assert "tree frog vs tailed frog, by their pair descriptors (FuDD)" in [h.value for h in at.subheader]
    table = next(d.value for d in at.dataframe if "feature" in d.value.columns)
    picture = ingest.images.read_image_bytes("frog.png", data)
    (exp,) = frogs.load("frogs").explain(
        fake.embed_images([picture])[0], ["frog.png"], compare=("tree frog", "tailed frog")
    )
    f = exp.contrast.pair_descriptors.features[0]
    assert list(table["S (tree frog)"]) == pytest.approx([f.similarity_a * 100], abs=1e-4)
    assert list(table["favours"]) == ["tree frog"]
    pick = {box.label: box for box in at.selectbox}
    pick["with class B"].set_value("banana").run()
    assert not any("pair descriptors" in h.value for h in at.subheader)
