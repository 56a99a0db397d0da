"""What a new user met on the dashboard (issue 21, items 4, 5, 11, 12 and 14), through
Streamlit's AppTest and the charts' Altair specs: a banner for a random-weight model, the
library just made opened first, only the samples of its classes offered, the contrast read as
the CLI reads it, S (similarity x logit scale) with 2 decimals wherever a score is shown, and
charts whose axes fit the data."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT
from tests.helpers.fakes import FakeEncoder, install_fake, planted_png
from tests.helpers.planted import CONCEPTS as PLANTED
from tests.helpers.planted import IMAGES, write_dataset
from tests.helpers.planted import LIBRARY as PLANTED_LIBRARY
from whyclip import ingest
from whyclip.ingest import ingest_library
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import run_eval
from whyclip.store import AuditSettings, audit, load_run, midpoint_rule
from whyclip.ui.dashboard import charts
from whyclip.ui.render.audit_report import pvalue

APP = str(ROOT / "ui" / "dashboard" / "streamlit_app.py")
CONCEPTS = ["protruding eyes", "bright green colour", "tree frog", "tailed frog", "brown or olive skin"]
FROGS = {
    "tree frog": ["sticky toe pads", "protruding eyes", "wet and hairless nose", "bright green colour"],
    "tailed frog": ["brown or olive skin", "a short tail-like extension", "protruding eyes"],
    "banana": ["yellow peel", "a long curved shape"],
}
BIRDS = {"Baltimore Oriole": ["bright orange underparts"], "Cardinal": ["bright red plumage"]}
FROG_PNG = planted_png(["protruding eyes", "bright green colour"], size=32)


@pytest.fixture
def fake(monkeypatch, fresh_streamlit_caches):
    return install_fake(monkeypatch, CONCEPTS)


def explain(upload: bytes | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if upload is not None:
        at.file_uploader[0].set_value([("frog.png", upload, "image/png")]).run()
    assert not at.exception
    return at


def column_formats(element) -> dict[str, str]:
    """``{column: number format}`` of a rendered dataframe's column_config."""
    config = json.loads(element.proto.columns or "{}")
    return {name: c.get("type_config", {}).get("format", "") for name, c in config.items() if isinstance(c, dict)}


def table_with(at: AppTest, column: str):
    return next(d for d in at.dataframe if column in d.value.columns)


# -- item 5: the model, the library and the samples ----------------------------------------


def test_a_random_weight_model_gets_a_banner(store, tiny_model, fresh_streamlit_caches):
    enc = ingest.load_encoder(str(tiny_model))
    ingest_library(store, FROGS, "frogs", enc)
    at = explain()
    banners = [w.value for w in at.warning]
    assert any("random-weight test model" in w and "explanations mean nothing" in w for w in banners), banners
    assert at.subheader[0].value.startswith("Predicted: ")


def test_a_real_model_gets_no_banner(store, fake):
    ingest_library(store, FROGS, "frogs", fake)
    at = explain()
    assert at.subheader[0].value.startswith("Predicted: ")
    assert not any("random-weight" in w.value for w in at.warning)


def test_is_test_model_is_the_marker_file(tmp_path):
    from whyclip.ingest.encoder.loading import TEST_MODEL_MARKER, is_test_model

    folder = tmp_path / "model"
    folder.mkdir()
    assert not is_test_model(str(folder))
    (folder / TEST_MODEL_MARKER).write_text("{}")
    assert is_test_model(str(folder))
    assert not is_test_model("clip-ViT-B-32")
    assert not is_test_model(None)


def test_the_pages_open_on_the_library_just_made_or_the_one_asked_for(store, fake, monkeypatch):
    ingest_library(store, FROGS, "frogs", fake)  # made first, first by name
    ingest_library(store, {"tree frog": ["protruding eyes"], "banana": ["yellow peel"]}, "zoo", fake)
    at = explain()
    assert at.selectbox(key="explain_library").value == "zoo"
    at.switch_page("audit_page.py").run()
    assert at.selectbox(key="audit_library").value == "zoo"
    monkeypatch.setenv("WHYCLIP_UI_LIBRARY", "frogs")  # whyclip ui --library frogs
    at = explain()
    assert at.selectbox(key="explain_library").value == "frogs"


def test_only_samples_of_the_librarys_classes_are_offered(store, fake):
    ingest_library(store, FROGS, "frogs", fake)
    at = explain()
    picker = at.multiselect[0]
    assert picker.options == ["sample: tree frog", "sample: banana"]
    assert picker.value == ["sample: tree frog"]
    note = next(c.value for c in at.caption if "not offered" in c.value)
    assert "stop sign, sunflower, ladybug, traffic light" in note
    assert "library 'frogs'" in note

    ingest_library(store, BIRDS, "birds", fake)  # made last: the page opens on it
    at = explain()
    assert at.selectbox(key="explain_library").value == "birds"
    assert at.multiselect[0].options == []
    assert not at.subheader  # nothing explained: no frog called an oriole
    assert any("Upload an image" in i.value for i in at.info)
    assert any("tree frog, banana, stop sign" in c.value and "library 'birds'" in c.value for c in at.caption)


# -- items 4, 12 and 14: the Explain page --------------------------------------------------


def test_the_contrast_reads_as_the_cli_reads_it(store, fake):
    ingest_library(store, FROGS, "frogs", fake)
    at = explain(FROG_PNG)
    pick = {box.label: box for box in at.selectbox}
    pick["Contrast class A"].set_value("tree frog")
    pick["with class B"].set_value("tailed frog").run()
    assert not at.exception
    picture = ingest.images.read_image_bytes("frog.png", FROG_PNG)
    (exp,) = store.load("frogs").explain(
        fake.embed_images([picture])[0], ["frog.png"], compare=("tree frog", "tailed frog")
    )
    c, s = exp.contrast, exp.logit_scale
    shown = table_with(at, "pulls toward")
    data = shown.value
    assert list(data.columns) == [
        "descriptor",
        "class",
        "S under tree frog",
        "S under tailed frog",
        "contribution",
        "pulls toward",
    ]
    assert list(data["descriptor"]) == [r.descriptor for r in c.rows]
    assert list(data["class"]) == [r.owner("tree frog", "tailed frog") for r in c.rows]
    assert "both" in list(data["class"])  # "protruding eyes" is in both lists
    assert list(data["S under tree frog"]) == ["-" if r.a is None else f"{r.a * s:.2f}" for r in c.rows]
    assert list(data["S under tailed frog"]) == ["-" if r.b is None else f"{r.b * s:.2f}" for r in c.rows]
    assert "-" in list(data["S under tailed frog"])
    assert "None" not in data.astype(str).to_numpy().ravel().tolist()
    assert list(data["pulls toward"]) == [r.favours for r in c.rows]
    assert column_formats(shown)["contribution"] == "%+.2f"
    rule = midpoint_rule("tree frog", "tailed frog", "mean")
    mid = (c.score_a + c.score_b) / 2 * s
    (line,) = [x.value for x in at.caption if "midpoint" in x.value]
    assert line.startswith(rule[0].upper() + rule[1:] + f"; midpoint {mid:.2f}.")
    spec = next(json.loads(e.proto.spec) for e in at.get("vega_lite_chart") if "pulls toward" in e.proto.spec)
    assert spec["encoding"]["color"]["field"] == "pulls toward"


def test_scores_show_two_decimals_and_the_encoding_time_only_when_encoded(store, fake):
    ingest_library(store, FROGS, "frogs", fake)
    at = explain(FROG_PNG)
    assert column_formats(table_with(at, "S (score x scale)"))["S (score x scale)"] == "%.2f"
    assert column_formats(table_with(at, "S (score x scale)"))["probability"] == "%.3f"
    assert column_formats(table_with(at, "weight"))["S"] == "%.2f"  # a class's descriptors
    retrieved = at.dataframe[-1]
    assert list(retrieved.value.columns) == ["class", "descriptor", "S", "similarity"]
    assert column_formats(retrieved)["S"] == "%.2f"
    assert any(x.value.startswith("image encoded in ") for x in at.caption)
    at.run()  # a rerun: the image's vector comes from the cache
    assert not at.exception
    (footer,) = [x.value for x in at.caption if "explained in" in x.value]
    assert footer.startswith("image vector from the cache, explained in ")


def classes(*scores) -> SimpleNamespace:
    """A stand-in explanation for the chart functions: what they read, no more."""
    return SimpleNamespace(
        classes=[
            SimpleNamespace(name=f"a long class name number {i} of two hundred", rank=i + 1, **p)
            for i, p in enumerate(scores)
        ]
    )


def test_the_probability_axis_scales_to_the_data_and_labels_are_not_cut():
    exp = classes(*[{"probability": p, "baseline_probability": p / 2} for p in (0.031, 0.022, 0.017)])
    x = charts.probability_chart(exp).to_dict()["encoding"]["x"]
    assert x["scale"]["domain"] == [0, 0.05]  # 0.031 x 1.1, up to the next 0.05
    y = charts.probability_chart(exp).to_dict()["encoding"]["y"]
    assert y["axis"]["labelLimit"] >= 400
    sure = classes({"probability": 0.97, "baseline_probability": 0.5})
    assert charts.probability_chart(sure).to_dict()["encoding"]["x"]["scale"]["domain"] == [0, 1.0]


def descriptor_class(values: list[float], score: float, scale: float = 100.0) -> SimpleNamespace:
    return SimpleNamespace(
        score=score / scale,
        descriptors=[
            SimpleNamespace(
                descriptor=f"d{i}", prompt=f"p{i}", fallback=False, scaled=v, similarity=v / scale, weight=1.0
            )
            for i, v in enumerate(values)
        ],
    )


@pytest.mark.parametrize(
    ("values", "score"),
    [([27.9, 24.8, 21.3], 24.7), ([-0.4, -1.2, -3.1], -1.6)],
    ids=["real CLIP, S about 20-30", "negative S"],
)
def test_descriptor_bars_start_near_the_smallest_s_shown(values, score):
    spec = charts.descriptor_chart(descriptor_class(values, score), 100.0).to_dict()
    (bars,) = [layer for layer in spec["layer"] if layer["mark"]["type"] == "bar"]
    scale = bars["encoding"]["x"]["scale"]
    lo, hi = scale["domain"]
    assert scale["zero"] is False
    assert min(values) - 1.0 < lo < min(values)  # just below the smallest, not at 0
    assert max(values) < hi < max(values) + 1.0
    lengths = [v - lo for v in values]  # a bar runs from the axis start to its S
    assert lengths == sorted(lengths, reverse=True)  # the best descriptor has the longest bar
    assert min(lengths) > 0


# -- items 11 and 14: the Audit page -------------------------------------------------------


@pytest.fixture
def planted_run(store, tmp_path, monkeypatch, fresh_streamlit_caches):
    def make(images=IMAGES):
        enc = FakeEncoder(PLANTED, noise=0.01)
        monkeypatch.setattr(ingest, "load_encoder", lambda *args, **kwargs: enc)
        ingest_library(store, PLANTED_LIBRARY, "planted", enc, template="bare")
        report = run_eval(store, store.load("planted"), read_dataset(write_dataset(tmp_path / "data", images)), enc)
        expected = audit(load_run(store.engine, report.run), store.load("planted"), AuditSettings())
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("audit_page.py").run()
        assert not at.exception
        return at, expected

    return make


def specs(at: AppTest) -> list[dict]:
    return [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]


def y_titles(spec: dict) -> set[str]:
    return {layer["encoding"]["y"].get("title") for layer in spec["layer"] if "y" in layer.get("encoding", {})}


def test_audit_charts_have_proper_axes_and_a_square_reliability_diagram(planted_run):
    at, _ = planted_run()
    charts_ = specs(at)
    (reliability,) = [s for s in charts_ if s.get("title") == "reliability diagram"]
    assert reliability["width"] == reliability["height"]
    assert y_titles(reliability) == {"accuracy (share correct)"}
    (accuracy,) = [
        s for s in charts_ if "layer" in s and any(x["encoding"]["y"]["field"] == "top-1" for x in s["layer"])
    ]
    assert y_titles(accuracy) == {"top-1 accuracy (mean)"}
    (shares,) = [s for s in charts_ if "share of the true class's score" in json.dumps(s)]
    assert shares["encoding"]["y"]["axis"]["labelLimit"] >= 400
    assert shares["encoding"]["y"]["axis"]["labelOverlap"] is False
    assert shares["height"]["step"] >= 20


def test_audit_tables_format_p_intervals_and_scores_as_s(planted_run, store):
    at, expected = planted_run()
    scale = store.library("planted").logit_scale
    shown = table_with(at, "p_value")
    data = shown.value
    assert list(data["p_value"]) == [pvalue(r["p_value"]) for r in expected["per_class"]]
    assert list(data["ci95"]) == [
        f"[{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}] %" for r in expected["per_class"]
    ]
    config = json.loads(shown.proto.columns)
    labels = {k: v.get("label") for k, v in config.items() if isinstance(v, dict)}
    assert labels["ci95"] == "95% interval (descriptors)"
    assert labels["p_value"].startswith("p ")
    first = expected["confusions"][0]
    evidence = [d for d in at.dataframe if list(d.value.columns) == ["text", "class", "contribution", "pulls toward"]]
    rows = first["towards_predicted"] + first["towards_true"]
    assert list(evidence[0].value["text"]) == [r["text"] for r in rows]
    assert list(evidence[0].value["contribution"]) == pytest.approx([r["contribution"] * scale for r in rows])
    assert list(evidence[0].value["pulls toward"]) == [first["predicted"]] * len(first["towards_predicted"]) + [
        first["true"]
    ] * len(first["towards_true"])
    assert column_formats(evidence[0])["contribution"] == "%+.2f"
    assert json.loads(evidence[0].proto.columns)["contribution"]["label"] == "S"
    drivers = table_with(at, "top_correct").value
    shown_drivers = [r for r in expected["drivers"] if r["top_correct"] + r["top_wrong"]]
    assert list(drivers["mean_margin"]) == pytest.approx([r["mean_margin"] * scale for r in shown_drivers])


def test_no_difference_is_not_a_green_gain(planted_run):
    every_one_right = {
        folder: [(name, concepts) for name, concepts in files if name not in ("b3.png", "u1.png", "u2.png")]
        for folder, files in IMAGES.items()
    }
    at, expected = planted_run(every_one_right)
    by = {r["method"]: r["top1"] for r in expected["accuracy"]}
    assert by["mean"] == by["baseline"] == 1.0
    (metric,) = [m for m in at.metric if m.label == "class name only"]
    assert metric.value == "100.0%"
    assert metric.delta == "no difference by descriptors"
    assert metric.proto.color == metric.proto.MetricColor.GRAY
    assert metric.proto.direction == metric.proto.MetricDirection.NONE
