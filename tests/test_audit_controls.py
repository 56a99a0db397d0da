"""Controls whose outcome is not known in advance, on two planted worlds (paper template,
fake encoder): in NAME_WORLD the descriptors name nothing any image shows, so the class
name decides; in DESC_WORLD the class names are arbitrary words and the descriptors decide.
The name/description split, the swap and the random-word control must each say which,
with the paired test's verdict; a run stored before these controls existed still audits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from tests.helpers.fakes import FakeEncoder
from tests.helpers.planted import write_dataset
from whyclip.ingest import ingest_library
from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.control_libraries import random_word_descriptors, swap_permutation
from whyclip.ingest.services.evaluate import run_eval
from whyclip.ingest.vocabulary import general_words
from whyclip.store import Store
from whyclip.store.analysis.audit import AuditSettings, audit
from whyclip.store.db.runs import find_run, load_run
from whyclip.store.db.schema import EvalResultRow, EvalRunRow

NAME_CONCEPTS = ["frog", "banana", "zebra", "sunflower"]
NAME_LIBRARY = {
    c: ["nice look", "common sight", "pleasant shape"] for c in ("tree frog", "banana", "zebra", "sunflower")
}
NAME_IMAGES = {  # four images show their class; two also show another class more strongly (wrong every way)
    cls: [(f"{k}{j}.png", concept) for j in range(4)]
    + [(f"{k}x{j}.png", f"{concept}|{NAME_CONCEPTS[(k + 1) % 4]}*2") for j in range(2)]
    for k, (cls, concept) in enumerate(zip(NAME_LIBRARY, NAME_CONCEPTS, strict=True))
}

DESC_CONCEPTS = ["webbed", "feathers", "octagon", "stripes", "petals", "whiskers", "hooves", "antlers"]
DESC_LIBRARY = {
    "alpha": ["webbed feet", "feathers on top"],
    "bravo": ["octagon outline", "stripes all over"],
    "charlie": ["petals around", "long whiskers"],
    "delta": ["small hooves", "tall antlers"],
}
DESC_IMAGES = {
    cls: [(f"{cls}{j}.png", f"{DESC_CONCEPTS[2 * k]}|{DESC_CONCEPTS[2 * k + 1]}") for j in range(6)]
    for k, cls in enumerate(DESC_LIBRARY)
}


def planted(tmp_path, concepts, library, images):
    assert not any(c in w for c in concepts for w in general_words())  # random words cannot show a concept
    store = Store.open(tmp_path / "home")
    enc = FakeEncoder(concepts, noise=0.01)
    ingest_library(store, library, "lib", enc, template="paper")
    lib = store.load("lib")
    run_eval(store, lib, read_dataset(write_dataset(tmp_path / "data", images)), enc, name="r")
    return store, lib, load_run(store.engine, find_run(store.engine, "lib", "r"))


def test_descriptors_that_add_nothing_beyond_the_name(tmp_path):
    _store, lib, run = planted(tmp_path, NAME_CONCEPTS, NAME_LIBRARY, NAME_IMAGES)
    c = audit(run, lib, AuditSettings())["controls"]
    nd = c["name_description"]
    assert nd["name_share"] > 0.9
    assert nd["description_share"] < 0.1
    assert nd["name_share"] + nd["description_share"] == pytest.approx(1)
    assert nd["decisions_changed"] == 0
    assert nd["p_value"] == 1.0
    assert not nd["significant"]
    assert "not significant" in nd["verdict"]
    assert "add nothing" in nd["verdict"]
    assert all(r["name_share"] > 0.9 and r["n"] == 6 for r in nd["per_class"])
    assert c["swap"]["accuracy"] == pytest.approx(16 / 24)
    assert c["swap"]["p_value"] == 1.0
    assert "not significant" in c["swap"]["verdict"]
    assert "do not carry the decision" in c["swap"]["verdict"]
    rw = c["random_words"]
    assert rw["draws"] == 5
    assert rw["accuracy_mean"] == pytest.approx(16 / 24)
    assert rw["accuracy_sd"] == 0
    assert rw["p_value"] == 1.0
    assert "not significant" in rw["verdict"]
    assert "do not beat random words" in rw["verdict"]
    assert c["baseline"]["p_value"] == 1.0
    assert "not significant" in c["baseline"]["verdict"]


def test_descriptors_that_carry_the_decision(tmp_path):
    _store, lib, run = planted(tmp_path, DESC_CONCEPTS, DESC_LIBRARY, DESC_IMAGES)
    a = audit(run, lib, AuditSettings())
    c = a["controls"]
    assert {r["method"]: r["top1"] for r in a["accuracy"]}["mean"] == 1.0
    nd = c["name_description"]
    assert nd["description_share"] > 0.8
    assert nd["significant"]
    assert nd["p_value"] < 1e-3
    assert nd["decisions_changed"] == pytest.approx(1 - {r["method"]: r["top1"] for r in a["accuracy"]}["baseline"])
    assert c["swap"]["accuracy"] == 0.0
    assert c["swap"]["p_value"] == pytest.approx(2 * 0.5**24)
    assert "the descriptors carry the decision" in c["swap"]["verdict"]
    assert "not significant" not in c["swap"]["verdict"]
    rw = c["random_words"]
    assert rw["accuracy_mean"] < 0.6
    assert rw["p_value"] < 0.01
    assert "the descriptors beat random words" in rw["verdict"]
    assert rw["ci95"][0] <= rw["accuracy_mean"] <= rw["ci95"][1]


def test_swap_is_a_derangement_and_random_words_come_from_the_vocabulary(tmp_path):
    for n in (2, 3, 7, 50):
        perm = swap_permutation(n, 0)
        assert sorted(perm) == list(range(n))
        assert not np.any(perm == np.arange(n))
    _store, lib, _run = planted(tmp_path, DESC_CONCEPTS, DESC_LIBRARY, DESC_IMAGES)
    vocab = set(general_words())
    draws = [random_word_descriptors(lib, j) for j in range(5)]
    assert len({json.dumps(d) for d in draws}) == 5  # five different draws
    for d in draws:
        assert [[len(t.split()) for t in ts] for ts in d] == [
            [len(t.split()) for t in v] for v in DESC_LIBRARY.values()
        ]
        assert {w for ts in d for t in ts for w in t.split()} <= vocab


def test_a_run_stored_before_the_new_controls_still_audits(tmp_path):
    store, lib, run = planted(tmp_path, DESC_CONCEPTS, DESC_LIBRARY, DESC_IMAGES)
    with Session(store.engine) as s, s.begin():
        s.execute(
            delete(EvalResultRow).where(
                EvalResultRow.method.like("words%")
                | EvalResultRow.method.like("swap:%")
                | EvalResultRow.method.like("bare:%")
            )
        )
        details = dict(run.info.details)
        details.pop("controls")
        s.execute(update(EvalRunRow).where(EvalRunRow.id == run.info.id).values(details=json.dumps(details)))
    old = load_run(store.engine, find_run(store.engine, "lib", "r"))
    c = audit(old, lib, AuditSettings())["controls"]
    for key in ("name_description", "swap", "random_words"):
        assert "before whyclip stored this control" in c[key]["note"]
    assert "p_value" in c["shuffled_descriptor_words"]
    assert "p_value" in c["baseline"]
