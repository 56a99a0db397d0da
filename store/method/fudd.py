"""FuDD's scoring, pure numpy: re-rank images with differential descriptions: a pairs file's, or the
pair descriptors stored with a library version (:mod:`whyclip.store.db.pair_descriptors`).

For each image, the candidates are its ``top_k`` classes under the run's method. A candidate's
differential score is the mean similarity of the image to the descriptions written for it in
the pairs it forms with the other candidates (each description rendered with the library's
template). When the predicted class has such descriptions, the prediction becomes the
described candidate with the best differential score; otherwise the prediction stands (the
class is in no described pair among the candidates).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # stored pairs are passed in; nothing here reads the database
    from whyclip.store.db.pair_descriptors import StoredPair


@dataclass(frozen=True)
class PairTexts:
    """Per ordered (class, other) position pair: the rows of that class's descriptions in ``vectors``."""

    rows: dict[tuple[int, int], list[int]]
    vectors: np.ndarray  # (m, d) unit vectors


def rerank_with_pairs(vectors: np.ndarray, top: np.ndarray, texts: PairTexts, top_k: int) -> np.ndarray:
    """The predicted class position of each image (see the module docstring)."""
    sims = vectors @ texts.vectors.T if len(texts.vectors) else np.zeros((len(vectors), 0), np.float32)
    sums = {key: sims[:, rows].astype(np.float64).sum(axis=1) for key, rows in texts.rows.items() if rows}  # per image
    predicted: np.ndarray = top[:, 0].copy()
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


def stored_pair_texts(pairs: Iterable[StoredPair]) -> PairTexts:
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
