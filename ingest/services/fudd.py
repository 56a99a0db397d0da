"""Re-rank images with differential descriptions (FuDD's scoring): a pairs file's, or the
pair descriptors stored with a library version (:mod:`whyclip.store.db.pair_descriptors`).

For each image, the candidates are its ``top_k`` classes under the run's method. A candidate's
differential score is the mean similarity of the image to the descriptions written for it in
the pairs it forms with the other candidates (each description rendered with the library's
template). When the predicted class has such descriptions, the prediction becomes the
described candidate with the best differential score; otherwise the prediction stands (the
class is in no described pair among the candidates).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whyclip.ingest.embedding import embed_prompts
from whyclip.store import InputError, Template


@dataclass(frozen=True)
class PairTexts:
    """Per ordered (class, other) position pair: the rows of that class's descriptions in ``vectors``."""

    rows: dict[tuple[int, int], list[int]]
    vectors: np.ndarray  # (m, d) unit vectors


def rerank(vectors: np.ndarray, top: np.ndarray, texts: PairTexts, top_k: int) -> np.ndarray:
    """The predicted class position of each image (see the module docstring)."""
    sims = vectors @ texts.vectors.T if len(texts.vectors) else np.zeros((len(vectors), 0), np.float32)
    sums = {key: sims[:, rows].astype(np.float64).sum(axis=1) for key, rows in texts.rows.items() if rows}  # per image
    predicted = top[:, 0].copy()
    for i in range(len(vectors)):
        candidates = [int(c) for c in top[i, :top_k]]
        scores = {}
        for c in candidates:
            keys = [(c, o) for o in candidates if o != c and (c, o) in sums]
            if keys:  # the mean over every description of c against the other candidates
                scores[c] = sum(float(sums[k][i]) for k in keys) / sum(len(texts.rows[k]) for k in keys)
        if predicted[i] in scores:
            predicted[i] = max(scores, key=lambda c: (scores[c], -candidates.index(c)))
    return predicted


def rerank_results(base, vectors: np.ndarray, labels: np.ndarray, texts: PairTexts, top_k: int):
    """``base``'s :class:`MethodResults` re-ranked: each image's chosen class moves to the
    front of its top classes, the others keep their order; scores are ``base``'s (FuDD has
    no score for every class), and the true class's rank is its place in the new order
    (unchanged when it is not among the re-ranked candidates)."""
    from whyclip.store import MethodResults

    chosen = rerank(vectors, base.top, texts, top_k)
    j = np.argmax(base.top == chosen[:, None], axis=1)  # where the chosen class stood
    cols = np.arange(base.top.shape[1])[None, :]
    src = np.where(cols <= j[:, None], cols - 1, cols)  # it moves to the front, those before it one down
    src[:, 0] = j
    top = np.take_along_axis(base.top, src, axis=1)
    scores = np.take_along_axis(base.top_scores, src, axis=1)
    hit = top == np.asarray(labels)[:, None]
    rank = np.where(hit.any(axis=1), np.argmax(hit, axis=1) + 1, base.true_rank).astype(np.int64)
    return MethodResults(top, scores, base.true_score.copy(), rank)


def stored_pair_texts(pairs) -> PairTexts:
    """The :class:`PairTexts` of a version's stored pairs (their vectors are in the store)."""
    rows: dict[tuple[int, int], list[int]] = {}
    blocks, n = [], 0
    for p in pairs:
        for k, d in enumerate(p.descriptions):
            other = p.class_b if d.class_position == p.class_a else p.class_a
            rows.setdefault((d.class_position, other), []).append(n + k)
        blocks.append(p.vectors)
        n += len(p.descriptions)
    vectors = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros((0, 0), np.float32)
    return PairTexts(rows, vectors)


def pair_texts(store, lib, pairs: list[dict], encoder) -> PairTexts:
    """Embed every pair description, rendered with the library's template, through the cache."""
    position = {name: k for k, name in enumerate(lib.class_names)}
    template = Template(lib.info.template)
    prompts, rows = [], {}
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
