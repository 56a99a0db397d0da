"""whyclip eval / audit on the planted world of :mod:`tests.helpers.planted`: a fake encoder
whose vectors are known concepts, so accuracies, drivers, confusions and hygiene findings
are known before the run (the helper's docstring tables what each image shows and why the
mean aggregate gets 6 of 9 right)."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tests.helpers.planted import IMAGES, LIBRARY, write_dataset
from whyclip.ingest import ingest_library, read_image
from whyclip.ingest.datasets import match_labels, read_dataset
from whyclip.ingest.services.control_libraries import control_descriptors
from whyclip.ingest.services.evaluate import run_eval
from whyclip.store.analysis.audit import AuditSettings, audit
from whyclip.store.db.runs import find_run, list_runs, load_run
from whyclip.store.errors import InputError

pytestmark = pytest.mark.usefixtures("database")  # each test on SQLite and on PostgreSQL


def test_planted_accuracies_confusions_and_drivers(world):
    store, enc, lib, data = world
    report = run_eval(store, lib, read_dataset(data), enc, name="r1")
    assert report.run.n_images == 9
    assert report.skipped == []
    assert report.n_embedded == 9
    run = load_run(store.engine, find_run(store.engine, "planted", "r1"))
    out = audit(run, lib, AuditSettings(delete_k=1, near_threshold=0.9))
    acc = {a["method"]: a for a in out["accuracy"]}
    assert acc["mean"]["top1"] == pytest.approx(6 / 9)
    assert acc["baseline"]["top1"] == 1.0
    assert acc["mean"]["top5"] == 1.0  # four classes: the true one is always in the top 5
    per = {c["class"]: (c["n"], c["top1"], c["baseline_top1"]) for c in out["per_class"]}
    assert per == {
        "tree frog": (2, 1.0, 1.0),
        "banana": (3, pytest.approx(2 / 3), 1.0),
        "stop sign": (2, 1.0, 1.0),
        "sunflower": (2, 0.0, 1.0),
    }
    pairs = [(c["predicted"], c["true"], c["count"]) for c in out["confusions"]]
    assert pairs == [("banana", "sunflower", 2), ("tree frog", "banana", 1)]
    assert out["confusions"][0]["towards_predicted"][0]["text"] == "yellow peel"
    assert out["confusions"][1]["towards_predicted"][0]["text"] == "big eyes"
    drivers = {(d["class"], d["text"]): (d["top_correct"], d["top_wrong"]) for d in out["drivers"]}
    assert drivers[("tree frog", "green skin")] == (2, 0)
    assert drivers[("tree frog", "big eyes")] == (0, 1)
    assert drivers[("banana", "curved shape")] == (2, 0)
    assert drivers[("banana", "yellow peel")] == (0, 2)
    assert drivers[("stop sign", "red colour")] == (2, 0)
    assert sum(a + b for a, b in drivers.values()) == 9  # one top contributor per image
    assert "sunflower" not in {d["class"] for d in out["drivers"]}  # never predicted


def test_planted_hygiene(world):
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    run = load_run(store.engine, find_run(store.engine, "planted"))
    out = audit(run, lib, AuditSettings(near_threshold=0.9, min_n=2))
    h = out["hygiene"]
    assert [(s["text"], s["classes"]) for s in h["shared_texts"]] == [("smooth surface", 2)]
    assert [(p["class_a"], p["text_a"], p["class_b"], p["text_b"]) for p in h["near_identical"]] == [
        ("banana", "curved shape", "stop sign", "curved edge")
    ]
    assert h["near_identical"][0]["cosine"] > 0.99
    assert sorted((f["class"], f["text"]) for f in h["flat"]) == [
        ("banana", "smooth surface"),
        ("stop sign", "smooth surface"),
        ("sunflower", "dark seeds"),
        ("sunflower", "round head"),
        ("tree frog", "webbed feet"),
    ]
    assert [c["class"] for c in h["worse_than_baseline"]] == ["banana", "sunflower"]
    assert [c["class"] for c in audit(run, lib, AuditSettings(min_n=3))["hygiene"]["worse_than_baseline"]] == ["banana"]
    assert audit(run, lib)["hygiene"]["worse_than_baseline"] == []  # no class has the default 10 images


def test_stored_results_match_an_independent_oracle(world):
    """Every method's stored top classes and true rank equal a straightforward recomputation
    from the fake encoder's own vectors (descriptors, baseline, and the random-word control)."""
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    run = load_run(store.engine, find_run(store.engine, "planted", "r1"))
    names = list(LIBRARY)
    images, _ = enc.embed_images([read_image(p) for p in run.paths])
    assert np.allclose(images, run.vectors, atol=1e-6)

    def oracle(descs: dict[str, list[str]], method: str) -> np.ndarray:
        out = np.zeros((len(images), len(names)))
        for c, name in enumerate(names):
            vecs, norms = enc.embed_texts(descs[name])
            sims = images @ vecs.T
            if method == "mean":
                out[:, c] = sims.mean(axis=1)
            elif method == "max":
                out[:, c] = sims.max(axis=1)
            else:
                raw = (vecs * norms[:, None]).sum(axis=0)
                out[:, c] = images @ (raw / np.linalg.norm(raw))
        return out

    control = dict(zip(names, control_descriptors(lib), strict=True))
    assert [len(v) for v in control.values()] == [len(v) for v in LIBRARY.values()]
    assert [[len(t.split()) for t in v] for v in control.values()] == [
        [len(t.split()) for t in v] for v in LIBRARY.values()
    ]
    words = {w for v in LIBRARY.values() for t in v for w in t.split()}
    assert {w for v in control.values() for t in v for w in t.split()} <= words
    base_vecs, _ = enc.embed_texts([f"a photo of a {n}." for n in names])
    cases = {m: oracle(LIBRARY, m) for m in ("mean", "centroid", "max")}
    cases["baseline"] = images @ base_vecs.T
    cases.update({f"control:{m}": oracle(control, m) for m in ("mean", "centroid", "max")})
    for method, scores in cases.items():
        r = run.results[method]
        assert np.array_equal(r.top[:, 0], np.argmax(scores, axis=1)), method
        assert np.allclose(r.true_score, scores[np.arange(len(images)), run.labels], atol=1e-5), method
        ranks = 1 + (scores > scores[np.arange(len(images)), run.labels][:, None]).sum(axis=1)
        assert np.array_equal(r.true_rank, ranks), method


@pytest.mark.parametrize("agg", ["mean", "centroid", "max"])
def test_deletion_control_matches_a_recomputation(world, agg):
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    run = load_run(store.engine, find_run(store.engine, "planted"))
    d = audit(run, lib, AuditSettings(aggregate=agg, delete_k=1, random_draws=3))["controls"]["deletion"]
    assert d["images"] == 9
    assert d["skipped"] == 0
    # The predicted class rescored without its most similar descriptor, one image at a time.
    r = run.results[agg]
    drops, kept = [], 0
    for i, x in enumerate(run.vectors):
        a = r.top[i, 0]
        lo, hi = lib.matrices.offsets[a], lib.matrices.offsets[a + 1]
        unit, norms = np.asarray(lib.vectors[lo:hi], np.float64), np.asarray(lib.files.norms[lo:hi], np.float64)
        rest = np.argsort(-(unit @ x))[1:]
        if agg == "mean":
            new = (unit[rest] @ x).mean()
        elif agg == "max":
            new = (unit[rest] @ x).max()
        else:
            raw = (unit[rest] * norms[rest, None]).sum(axis=0)
            new = raw @ x / np.linalg.norm(raw)
        drops.append(r.top_scores[i, 0] - new)
        kept += (a if new > r.top_scores[i, 1] else r.top[i, 1]) == run.labels[i]
    assert d["score_drop_top"] == pytest.approx(np.mean(drops), abs=1e-6)
    assert d["accuracy_top_removed"] == pytest.approx(kept / 9)
    assert d["accuracy_before"] == pytest.approx(np.mean(r.true_rank == 1))
    assert d["score_drop_top"] >= d["score_drop_random"]  # removing the best never costs less


def test_a_second_library_and_a_rerun_embed_no_image_again(world, tmp_path):
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    ingest_library(store, {k: v[:2] for k, v in LIBRARY.items()}, "other", enc, template="bare")
    before = sum(enc.image_batches)
    second = run_eval(store, store.load("other"), read_dataset(data), enc)
    again = run_eval(store, lib, read_dataset(data), enc)
    assert sum(enc.image_batches) == before
    assert second.n_cached == 9
    assert again.n_embedded == 0
    assert again.run.name == "data"
    assert run_eval(store, lib, read_dataset(data), enc).run.name == "data-2"
    with pytest.raises(InputError, match="already has a run 'r1'"):
        run_eval(store, lib, read_dataset(data), enc, name="r1")


def test_labels_match_loosely_and_unmatched_ones_refuse_or_skip(world, tmp_path):
    store, enc, lib, _ = world
    assert match_labels(["Tree_Frog", "STOP  sign", "banana", "cat"], list(LIBRARY)) == (
        {"Tree_Frog": 0, "STOP  sign": 2, "banana": 1},
        ["cat"],
    )
    images = dict(IMAGES, cat=[("c1.png", "frog")])
    data = write_dataset(tmp_path / "d2", images, rename={"tree frog": "Tree_Frog"})
    with pytest.raises(InputError, match=r"1 label\(s\) match no class .*'cat' \(1 images.*--skip-unmatched"):
        run_eval(store, lib, read_dataset(data), enc)
    assert list_runs(store.engine, "planted") == []  # refused before anything was stored
    report = run_eval(store, lib, read_dataset(data), enc, skip_unmatched=True)
    assert report.run.n_images == 9
    assert report.unmatched == {"cat": 1}


def test_an_unreadable_image_is_reported_and_skipped(world):
    store, enc, lib, data = world
    (data / "banana" / "b2.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (data / "banana" / "notes.txt").write_text("not an image, not listed")
    report = run_eval(store, lib, read_dataset(data), enc)
    assert report.run.n_images == 8
    assert len(report.skipped) == 1
    assert "b2.png" in report.skipped[0]
    assert "truncated" in report.skipped[0]
    run = load_run(store.engine, report.run)
    assert run.info.details["skipped"] == report.skipped
    assert not any("b2.png" in p for p in run.paths)


def test_a_csv_dataset(world, tmp_path):
    store, enc, lib, data = world
    rows = [("path", "label")] + [(f"data/{folder}/{f}", folder) for folder, files in IMAGES.items() for f, _ in files]
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    ds = read_dataset(tmp_path / "labels.csv")
    assert len(ds.items) == 9
    assert ds.items[0][0] == (data / "tree frog" / "f1.png").resolve()
    assert run_eval(store, lib, ds, enc).run.n_images == 9


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "no such dataset"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no class subfolders"),
        (lambda p: (p / "e2" / "cls").mkdir(parents=True) or p / "e2", "no images under .*e2 .looked recursively"),
        (lambda p: (p / "x.txt").write_text("a") and p / "x.txt", "not a folder or a .csv"),
        (lambda p: (p / "bad.csv").write_text("a.png,cat,extra\n") and p / "bad.csv", "line 1: expected two fields"),
    ],
)
def test_bad_datasets_are_refused_with_one_line(tmp_path, make, message):
    with pytest.raises(InputError, match=message) as err:
        read_dataset(make(tmp_path))
    assert "\n" not in str(err.value)
