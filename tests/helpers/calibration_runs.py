"""Evaluation runs planted for calibration: logits whose true temperature is known, stored
through the normal write path."""

from __future__ import annotations

import numpy as np

from whyclip.store import Store
from whyclip.store.analysis.run_records import BASELINE, rank_results
from whyclip.store.db.runs import save_run
from whyclip.store.method import AGGREGATES


def sample_labels(z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    u = rng.random(len(z))[:, None]
    return (p.cumsum(axis=1) < u).sum(axis=1).clip(max=z.shape[1] - 1)


def plant_run(
    store: Store, name: str = "planted", n: int = 400, t_true: float = 4.0, seed: int = 0, library: str = "zoo"
):
    """A run stored through the normal write path: seeded random image vectors, scored by
    the library; labels sampled from softmax(logits / t_true) (the library over-confident)."""
    lib = store.load(library)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, lib.info.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    z = lib.scores(x, lib.info.aggregate).astype(np.float64) * lib.info.logit_scale
    y = sample_labels(z / t_true, rng)
    results = {a: rank_results(lib.scores(x, a), y) for a in AGGREGATES}
    results[BASELINE] = rank_results(x @ np.asarray(lib.matrices.baseline).T, y)
    save_run(
        store.engine,
        library_id=lib.info.id,
        library_name=lib.info.name,
        name=name,
        dataset="planted",
        encoder_key="fake",
        paths=[f"img{i}.png" for i in range(n)],
        shas=["0" * 64] * n,
        labels=y,
        vectors=x,
        results=results,
        details={},
    )
    return lib, x, y, z
