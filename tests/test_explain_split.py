"""The name/description line of an explanation: for the image explained, how much of each
shown class's score its class-name prompt alone gives and how much the descriptor content
adds, fitted over the image's classes from the bare-descriptor prompts that ``whyclip eval``
embedded and cached. Checked against the fake encoder's vectors directly (no cache), with a
bare-template library as the control whose answer is known (its prompts *are* the bare
descriptors, so the name adds nothing)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tests.helpers.fakes import FakeEncoder, install_fake, planted_png
from tests.helpers.planted import CONCEPTS, LIBRARY, write_dataset
from whyclip.ingest import ingest_library, read_image
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import run_eval
from whyclip.store import Store
from whyclip.ui.cli.main import cli

IMAGE = ("tree frog", "f1.png")


def oracle(enc: FakeEncoder, lib, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shares by the definition, from vectors the encoder makes now (not the cache)."""
    full = lib.scores(x[None], "mean")[0].astype(np.float64)
    name = (x @ np.asarray(lib.matrices.baseline).T).astype(np.float64)
    bare = []
    for c in range(len(lib.class_names)):
        texts = [t for t, _ in lib.class_texts(c)]
        bare.append(enc.embed_texts(texts)[0].astype(np.float64).mean(axis=0) @ x if texts else name[c])
    s, n, b = (v - v.mean() for v in (full, name, np.array(bare)))
    g = np.array([[n @ n, n @ b], [n @ b, b @ b]])
    a, bb = np.linalg.solve(g, [s @ n, s @ b])
    pn, pd = np.abs(a * n), np.abs(bb * b)
    return pn / (pn + pd), pd / (pn + pd)


@pytest.fixture
def evaluated(tmp_path):
    store = Store.open(tmp_path / "home")
    enc = FakeEncoder(CONCEPTS, noise=0.01)
    data = write_dataset(tmp_path / "data")
    ingest_library(store, LIBRARY, "paper", enc, template="paper")
    return store, enc, data, tmp_path


def explain_one(store, enc, library: str, data):
    lib = store.load(library)
    picture = read_image(data / IMAGE[0] / IMAGE[1])
    x = enc.embed_images([picture])[0][0]
    (exp,) = lib.explain(x[None], ["f1"], top=4, name_split=lib.bare_scorer(enc.cache_key))
    return lib, x, exp


def test_before_eval_the_split_is_one_line_saying_why(evaluated):
    store, enc, data, _ = evaluated
    _, _, exp = explain_one(store, enc, "paper", data)
    assert "not in the embedding cache" in exp.name_description["note"]
    assert "whyclip eval" in exp.name_description["note"]
    assert all(c.name_share is None for c in exp.classes)
    text = exp.to_text()
    assert text.count("name vs description") == 1
    assert "\n" not in exp.name_description["note"]


def test_after_eval_each_shown_class_has_its_split_as_the_definition_says(evaluated):
    store, enc, data, _ = evaluated
    run_eval(store, store.load("paper"), read_dataset(data), enc, name="r")  # embeds and caches the bare descriptors
    lib, x, exp = explain_one(store, enc, "paper", data)
    name_share, desc_share = oracle(enc, lib, x)
    for c in exp.classes:
        pos = lib.class_names.index(c.name)
        assert c.name_share == pytest.approx(name_share[pos], abs=1e-5)
        assert c.description_share == pytest.approx(desc_share[pos], abs=1e-5)
        assert c.name_share + c.description_share == pytest.approx(1.0)
    assert 0 < exp.name_description["explained"] <= 1
    text = exp.to_text()
    assert text.count("name vs description: the class name alone gives") == len(exp.classes)
    d = exp.to_dict()
    assert d["classes"][0]["name_share"] == exp.classes[0].name_share
    assert d["name_description"]["coefficients"]
    assert type(exp).from_dict(d) == exp


def test_a_bare_template_library_gets_everything_from_the_description(evaluated):
    store, enc, data, _ = evaluated
    ingest_library(store, LIBRARY, "bare", enc, template="bare")
    run_eval(store, store.load("bare"), read_dataset(data), enc, name="r")
    _, _, exp = explain_one(store, enc, "bare", data)
    assert exp.name_description["coefficients"]["description"] == pytest.approx(1.0, abs=1e-5)
    for c in exp.classes:
        assert c.description_share == pytest.approx(1.0, abs=1e-4)


def test_the_cli_prints_one_line_per_class_and_the_json_carries_it(tmp_path, monkeypatch):
    install_fake(monkeypatch, CONCEPTS)
    lib_file = tmp_path / "lib.json"
    lib_file.write_text(json.dumps(LIBRARY))
    home = tmp_path / "home"
    run = lambda *a: CliRunner().invoke(cli, ["--home", str(home), *a])  # noqa: E731
    assert run("ingest", str(lib_file), "--library", "planted").exit_code == 0
    image = tmp_path / "frog.png"
    image.write_bytes(planted_png(["frog", "green", "eyes"]))
    before = run("explain", str(image), "--library", "planted", "--top", "3")
    assert before.exit_code == 0
    assert "name vs description" not in before.stdout  # said once, on stderr (issue 21, item 13)
    assert before.stderr.count("name vs description not shown") == 1
    data = write_dataset(tmp_path / "data")
    assert run("eval", str(data), "--library", "planted").exit_code == 0
    after = run("explain", str(image), "--library", "planted", "--top", "3")
    assert after.stdout.count("name vs description: the class name alone gives") == 3
    (record,) = [
        json.loads(line) for line in run("explain", str(image), "--library", "planted", "--json").stdout.splitlines()
    ]
    assert all(c["name_share"] + c["description_share"] == pytest.approx(1.0) for c in record["classes"])


def test_a_large_library_says_why_in_one_line(evaluated, monkeypatch):
    from whyclip.store import library as library_module

    store, enc, data, _ = evaluated
    run_eval(store, store.load("paper"), read_dataset(data), enc, name="r")
    monkeypatch.setattr(library_module, "SPLIT_MAX", 5)
    _, _, exp = explain_one(store, enc, "paper", data)
    assert "12 descriptors is over 5" in exp.name_description["note"]
    assert exp.classes[0].name_share is None
