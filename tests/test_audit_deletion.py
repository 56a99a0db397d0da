"""The deletion control against plain per-image loops, at several k: the explanation's top
``k`` descriptors removed (exact), and ``k`` random ones (every k-subset enumerated: the
expectation the seeded draws estimate)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from whyclip.ingest.datasets import read_dataset
from whyclip.ingest.services.evaluate import run_eval
from whyclip.store.analysis.audit import AuditSettings, audit, random_keep_masks
from whyclip.store.db.runs import find_run, load_run


def rescore(agg, unit, norms, x, keep):
    if agg == "mean":
        return (unit[keep] @ x).mean()
    if agg == "max":
        return (unit[keep] @ x).max()
    raw = (unit[keep] * norms[keep, None]).sum(axis=0)
    return raw @ x / np.linalg.norm(raw)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_random_masks_drop_exactly_k(k):
    masks = random_keep_masks(np.random.default_rng(1), 400, 3, 5, k)
    assert masks.shape == (400, 3, 5)
    assert np.all((~masks).sum(axis=2) == k)
    assert np.allclose((~masks).mean(axis=(0, 1)), k / 5, atol=0.05)  # every descriptor equally likely


@pytest.mark.parametrize("agg", ["mean", "centroid", "max"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_deletion_matches_per_image_loops(world, agg, k):
    store, enc, lib, data = world
    run_eval(store, lib, read_dataset(data), enc, name="r1")
    run = load_run(store.engine, find_run(store.engine, "planted"))
    draws = 600
    d = audit(run, lib, AuditSettings(aggregate=agg, delete_k=k, random_draws=draws))["controls"]["deletion"]
    r = run.results[agg]
    top_drops, top_ok, rand_drops, rand_ok, used = [], [], [], [], 0
    for i, x in enumerate(run.vectors.astype(np.float64)):
        a, rival, rival_score = r.top[i, 0], r.top[i, 1], r.top_scores[i, 1]
        lo, hi = lib.matrices.offsets[a], lib.matrices.offsets[a + 1]
        if hi - lo <= k:
            continue
        used += 1
        unit, norms = np.asarray(lib.vectors[lo:hi], np.float64), np.asarray(lib.files.norms[lo:hi], np.float64)
        order = np.argsort(-(unit @ x), kind="stable")
        new = rescore(agg, unit, norms, x, np.sort(order[k:]))
        top_drops.append(r.top_scores[i, 0] - new)
        top_ok.append((a if new > rival_score else rival) == run.labels[i])
        subsets = list(itertools.combinations(range(hi - lo), k))
        news = [rescore(agg, unit, norms, x, np.array([j for j in range(hi - lo) if j not in s])) for s in subsets]
        rand_drops.append(np.mean([r.top_scores[i, 0] - v for v in news]))
        rand_ok.append(np.mean([(a if v > rival_score else rival) == run.labels[i] for v in news]))
    assert d["images"] == used > 0
    assert d["skipped"] == 9 - used
    assert d["score_drop_top"] == pytest.approx(np.mean(top_drops), abs=1e-6)
    assert d["accuracy_top_removed"] == pytest.approx(np.mean(top_ok))
    assert d["score_drop_random"] == pytest.approx(np.mean(rand_drops), abs=0.01)
    assert d["accuracy_random_removed"] == pytest.approx(np.mean(rand_ok), abs=0.04)
