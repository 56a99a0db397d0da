"""FuDD in the pipelines: a pairs file's descriptions embedded through the cache
(:func:`pair_texts`) and a stored run's results re-ranked with them (:func:`rerank_results`);
the scoring itself is :mod:`whyclip.store.method.fudd`."""

from __future__ import annotations

import numpy as np

from whyclip.ingest.embedding import embed_prompts
from whyclip.store import InputError, MethodResults, PairTexts, Template, rerank_with_pairs


def rerank_results(base, vectors: np.ndarray, labels: np.ndarray, texts: PairTexts, top_k: int):
    """``base``'s :class:`MethodResults` re-ranked: each image's chosen class moves to the
    front of its top classes, the others keep their order; scores are ``base``'s (FuDD has
    no score for every class), and the true class's rank is its place in the new order
    (unchanged when it is not among the re-ranked candidates)."""
    chosen = rerank_with_pairs(vectors, base.top, texts, top_k)
    j = np.argmax(base.top == chosen[:, None], axis=1)  # where the chosen class stood
    cols = np.arange(base.top.shape[1])[None, :]
    src = np.where(cols <= j[:, None], cols - 1, cols)  # it moves to the front, those before it one down
    src[:, 0] = j
    top = np.take_along_axis(base.top, src, axis=1)
    scores = np.take_along_axis(base.top_scores, src, axis=1)
    hit = top == np.asarray(labels)[:, None]
    rank = np.where(hit.any(axis=1), np.argmax(hit, axis=1) + 1, base.true_rank).astype(np.int64)
    return MethodResults(top, scores, base.true_score.copy(), rank)


def pair_texts(store, lib, pairs: list[dict], encoder) -> PairTexts:
    """Embed every pair description, rendered with the library's template, through the cache."""
    position = {name: k for k, name in enumerate(lib.class_names)}
    template = Template(lib.info.template)
    prompts: list[str] = []
    rows: dict[tuple[int, int], list[int]] = {}
    for p in pairs:
        if p["a"] not in position or p["b"] not in position:
            missing = p["a"] if p["a"] not in position else p["b"]
            raise InputError(f"the pairs file names class {missing!r}, which library {lib.info.name!r} lacks")
        a, b = position[p["a"]], position[p["b"]]
        for f in p["features"]:
            for cls, other, text in ((a, b, f["a"]), (b, a, f["b"])):
                rows.setdefault((cls, other), []).append(len(prompts))
                prompts.append(template.build(lib.class_names[cls], text))
    vectors, _ = embed_prompts(store, encoder, prompts) if prompts else (np.zeros((0, lib.info.dim), np.float32), None)
    return PairTexts(rows, vectors)
