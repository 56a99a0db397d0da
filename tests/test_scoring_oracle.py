"""Exact class scores against the paper's rule written as a plain loop."""

from __future__ import annotations

import re

import numpy as np
import pytest

from whyclip.store import DraftClass, EncoderInfo, LibraryDraft

N_CLASSES, DIM = 37, 24


def _random_library(seed: int = 7, empty: tuple[int, ...] = (5, 30)):
    """Seeded random prompt vectors of odd sizes: 1-13 descriptors a class, some empty."""
    rng = np.random.default_rng(seed)
    classes, rows, raw = [], {}, []

    def add(prompt: str) -> None:
        rows[prompt] = len(raw)
        raw.append(rng.standard_normal(DIM) * rng.uniform(0.5, 3.0))

    for c in range(N_CLASSES):
        n = 0 if c in empty else int(rng.integers(1, 14))
        descs = [f"d{c}-{j}" for j in range(n)]
        prompts = [f"class {c}, which has {d}" for d in descs]
        for p in prompts:
            add(p)
        add(f"a photo of a class {c}.")
        classes.append(DraftClass(f"class {c}", f"a photo of a class {c}.", descs, prompts, [False] * n))
    raw = np.array(raw, dtype=np.float32)
    norms = np.linalg.norm(raw, axis=1)
    enc = EncoderInfo(id="oracle", name="oracle", dim=DIM, logit_scale=100.0)
    draft = LibraryDraft("oracle", enc, "paper", "a photo of a {class}.", classes, rows, raw / norms[:, None], norms)
    return draft, raw


def _paper_scores(img: np.ndarray, draft: LibraryDraft, raw: np.ndarray, aggregate: str) -> np.ndarray:
    """Per class: every descriptor similarity, then the aggregate (baseline when empty)."""
    out = []
    for c in draft.classes:
        prompts = c.prompts or [c.baseline_prompt]
        units = [raw[draft.prompt_rows[p]] / np.linalg.norm(raw[draft.prompt_rows[p]]) for p in prompts]
        sims = [float(np.dot(img, u)) for u in units]
        if aggregate == "mean":
            out.append(sum(sims) / len(sims))
        elif aggregate == "max":
            out.append(max(sims))
        else:
            centroid = np.sum([raw[draft.prompt_rows[p]] for p in prompts], axis=0)
            out.append(float(np.dot(img, centroid / np.linalg.norm(centroid))))
    return np.array(out)


@pytest.fixture
def oracle(store):
    draft, raw = _random_library()
    store.write_library(draft)
    images = np.random.default_rng(1).standard_normal((6, DIM)).astype(np.float32)
    images /= np.linalg.norm(images, axis=1, keepdims=True)
    return store.load("oracle"), draft, raw, images


@pytest.mark.parametrize("aggregate", ["mean", "centroid", "max"])
def test_scores_equal_the_paper_loop_for_every_class(oracle, aggregate):
    lib, draft, raw, images = oracle
    scores = lib.scores(images, aggregate)
    for i, img in enumerate(images):
        np.testing.assert_allclose(scores[i], _paper_scores(img, draft, raw, aggregate), atol=1e-5)


@pytest.mark.parametrize("aggregate", ["mean", "centroid", "max"])
def test_explanation_matches_the_loop(oracle, aggregate):
    lib, draft, raw, images = oracle
    (exp,) = lib.explain(images[:1], aggregate=aggregate, top=N_CLASSES)
    expected = _paper_scores(images[0], draft, raw, aggregate)
    assert [c.name for c in exp.classes] == [draft.classes[i].name for i in np.argsort(-expected, kind="stable")]
    z = np.exp(100 * (expected - expected.max()))
    probs = z / z.sum()
    by_name = {c.name: c for c in exp.classes}
    for k, c in enumerate(draft.classes):
        got = by_name[c.name]
        assert got.score == pytest.approx(expected[k], abs=1e-5)
        assert got.probability == pytest.approx(probs[k], abs=1e-4)
        sims = [d.similarity for d in got.descriptors]
        assert sims == sorted(sims, reverse=True)
        if aggregate == "mean":  # score is the aggregate of the listed similarities
            assert np.mean(sims) == pytest.approx(got.score, abs=1e-5)
        if aggregate == "max":
            assert max(sims) == pytest.approx(got.score, abs=1e-5)
        # the weights reproduce the score exactly for every aggregate
        assert sum(d.weight * d.similarity for d in got.descriptors) == pytest.approx(got.score, abs=1e-5)
        assert {d.descriptor for d in got.descriptors} == (set(c.descriptors) or {""})


@pytest.mark.parametrize("aggregate", ["mean", "centroid", "max"])
def test_contrast_rows_add_up_to_the_score_difference(oracle, aggregate):
    lib, _draft, _raw, images = oracle
    for a, b in [("class 3", "class 9"), ("class 5", "class 12"), ("class 11", "class 30")]:
        (exp,) = lib.explain(images[2:3], aggregate=aggregate, compare=(a, b))
        c = exp.contrast
        assert (c.a, c.b) == (a, b)
        assert sum(r.contribution for r in c.rows) == pytest.approx(c.score_a - c.score_b, abs=1e-5)
        contribs = [r.contribution for r in c.rows]
        assert contribs == sorted(contribs, reverse=True)


def test_retrieval_is_exact_top_10(oracle):
    lib, draft, raw, images = oracle
    texts = [(c.name, d, p) for c in draft.classes for d, p in zip(c.descriptors, c.prompts, strict=True)]
    units = np.array([raw[draft.prompt_rows[p]] / np.linalg.norm(raw[draft.prompt_rows[p]]) for _, _, p in texts])
    hits = lib.retrieve(images, 10)
    for img, got in zip(images, hits, strict=True):
        sims = units @ img
        best = np.argsort(-sims)[:10]
        assert [(r.class_name, r.descriptor) for r in got] == [texts[i][:2] for i in best]
        np.testing.assert_allclose([r.similarity for r in got], sims[best], atol=1e-5)


def test_empty_class_falls_back_to_its_baseline_and_says_so(oracle):
    lib, _draft, _raw, images = oracle
    (exp,) = lib.explain(images[:1], top=N_CLASSES)
    empty = next(c for c in exp.classes if c.name == "class 5")
    assert len(empty.descriptors) == 1
    assert empty.descriptors[0].fallback
    assert empty.descriptors[0].prompt == "a photo of a class 5."
    assert lib.info.n_empty_classes == 2


def test_top_k_equals_a_stable_full_sort():
    from whyclip.store.method import top_k

    rng = np.random.default_rng(5)
    for n, k in [(1, 1), (7, 3), (100, 10), (100, 100), (50, 80)]:
        scores = rng.integers(0, 6, n).astype(np.float32)  # many ties
        assert list(top_k(scores, k)) == list(np.argsort(-scores, kind="stable")[:k])


@pytest.mark.parametrize("aggregate", ["mean", "centroid", "max"])
def test_contrast_rows_name_their_class_and_follow_the_midpoint_rule(oracle, aggregate):
    """Each row says whose descriptor it is, and which class it pulls toward follows the
    printed rule exactly: above the midpoint (divided by the class's total weight under
    centroid) toward its own class, below it toward the other, 0 for weightless rows (max)."""
    lib, draft, raw, images = oracle
    mine = {d: c.name for c in draft.classes for d in c.descriptors}
    total_weight = {}
    for c in draft.classes:
        vecs = raw[[draft.prompt_rows[p] for p in c.prompts or [c.baseline_prompt]]]
        w = np.linalg.norm(vecs, axis=1).sum() / np.linalg.norm(vecs.sum(axis=0))
        total_weight[c.name] = w if aggregate == "centroid" else 1.0
    for img in images[:3]:
        for a, b in [("class 3", "class 9"), ("class 11", "class 30")]:
            (exp,) = lib.explain(img[None], aggregate=aggregate, compare=(a, b))
            c = exp.contrast
            mid = (c.score_a + c.score_b) / 2
            for r in c.rows:
                owner = mine.get(r.descriptor, b if r.descriptor.startswith("a photo of a class 30") else None)
                assert r.of == owner
                assert r.owner(a, b) == owner
                other = b if owner == a else a
                s = r.a if owner == a else r.b
                threshold = mid / total_weight[owner]
                if abs(r.contribution) < 1e-9:
                    assert r.favours == "-"
                else:
                    assert r.favours == (owner if s > threshold else other), (r, threshold)
            text = exp.to_text()
            assert f"midpoint {mid * 100:.2f}" in text
            assert "pulls toward" in text
            for r in c.rows:  # descriptor, its class, S under a and b, contribution, the class it pulls toward
                row = rf"^ +{re.escape(r.descriptor)} +{re.escape(r.of)} +[-0-9.]+ +[-0-9.]+ +[-+][0-9.]+  {r.favours}$"
                assert re.search(row, text, re.M), (row, text)


def test_a_descriptor_both_classes_have_is_one_row_of_both(store):
    enc = EncoderInfo(id="both", name="both", dim=3, logit_scale=10.0)
    raw = np.eye(3, dtype=np.float32)
    classes = [
        DraftClass("x", "a photo of a x.", ["wings", "beak"], ["x wings", "x beak"], [False, False]),
        DraftClass("y", "a photo of a y.", ["wings"], ["y wings"], [False]),
    ]
    rows = {"x wings": 0, "x beak": 1, "y wings": 0, "a photo of a x.": 2, "a photo of a y.": 2}
    draft = LibraryDraft("both", enc, "paper", "a photo of a {class}.", classes, rows, raw, np.ones(3))
    store.write_library(draft)
    img = np.array([[0.8, 0.6, 0.0]], dtype=np.float32)
    (exp,) = store.load("both").explain(img, compare=("x", "y"))
    by_text = {r.descriptor: r for r in exp.contrast.rows}
    assert by_text["wings"].of == "both"
    assert by_text["beak"].of == "x"
    assert (by_text["wings"].a, by_text["wings"].b) == (pytest.approx(0.8), pytest.approx(0.8))
    # x = (0.8 + 0.6) / 2 = 0.7, y = 0.8: midpoint 0.75; "beak" 0.6 is below it, toward y
    assert by_text["beak"].favours == "y"
    assert "  both  " in exp.to_text()
