"""Library-wide retrieval over the one exact copy of the descriptor vectors.

Every searcher answers ``search(queries, k) -> (similarities, positions)``, where positions
are descriptor rows in label (class-major) order, the rows of ``vectors.npy``.

* :class:`FlatScan` is exact: one product with every vector.
* :class:`~whyclip.store.vectors.pqrerank.PQRerank` (its own module) is the default
  approximate index: PQ fast-scan codes, re-ranked exactly.
* :class:`ClassIVF` (libraries built before the PQ index; read, no longer built by default)
  is an inverted file *without a second copy of the vectors*: its lists
  are the classes, whose rows are contiguous already, and its coarse quantizer the binary
  codes of the class-mean vectors. A query ranks the classes by Hamming distance and scores
  the descriptors of the ``probe`` nearest exactly from the fp32 vectors. ``probe`` is chosen
  at build time as the smallest that reaches :data:`RECALL_TARGET` on a seeded tuning
  sample, and the recall then reported is measured on a different sample (image-like
  queries since the PQ index: see :mod:`whyclip.store.vectors.recall_tuning`).
* :class:`FaissSearch` wraps a FAISS index built from a user's factory string (its ids are
  positions), or a FAISS index of an older layout whose ids are descriptor keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from whyclip.store.vectors.recall_tuning import RECALL_TARGET, recall
from whyclip.store.vectors.search import SCAN_CHUNK, exact_search, faiss_search, sort_hits

MIN_PROBE = 8  # classes probed at least, a margin beyond the tuning sample


@dataclass
class FlatScan:
    vectors: np.ndarray

    exact = True

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return exact_search(self.vectors, queries, k)


@dataclass
class ClassIVF:
    """An inverted file whose lists are the classes: the rows ``offsets[c]:offsets[c + 1]``
    of ``vectors``, stored contiguously already. The coarse search ranks classes by the
    Hamming distance between binary codes (one sign bit a dimension, after subtracting
    ``centre``) of the query and of each class-mean vector; the descriptors of the ``probe``
    nearest classes are then scored exactly."""

    vectors: np.ndarray
    offsets: np.ndarray  # (C + 1,) class-major row offsets
    codes: np.ndarray  # (C', d / 8) uint8 codes of the classes that have descriptors
    coded: np.ndarray  # (C',) their class positions
    centre: np.ndarray  # (d,) float32
    probe: int = MIN_PROBE

    exact = False

    def __post_init__(self) -> None:
        self._coarse = faiss.IndexBinaryFlat(self.codes.shape[1] * 8)
        if len(self.codes):
            self._coarse.add(np.ascontiguousarray(self.codes))

    def search(self, queries: np.ndarray, k: int, probe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        k = min(k, len(self.vectors))
        sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
        positions = np.full((len(queries), k), -1, dtype=np.int64)
        if k == 0 or not len(self.codes):
            return sims, positions
        probe = min(probe or self.probe, len(self.codes))
        sizes = np.diff(self.offsets)
        codes = encode(queries, self.centre)
        while True:
            _, nearest = faiss_search(self._coarse, codes, probe)
            classes = self.coded[nearest]
            if probe >= len(self.codes) or sizes[classes].sum(axis=1).min() >= k:
                break
            probe = min(len(self.codes), probe * 2)  # too few candidates: probe more classes
        for i, (q, row) in enumerate(zip(queries, classes, strict=True)):
            row = np.sort(row)
            lo, n = self.offsets[row], sizes[row]
            candidates = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
            s = np.asarray(self.vectors[candidates]) @ q
            kk = min(k, len(candidates))
            top = np.argpartition(-s, kk - 1)[:kk] if kk < len(candidates) else np.arange(kk)
            sims[i, :kk], positions[i, :kk] = s[top], candidates[top]
        return sort_hits(sims, positions)


def encode(vectors: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """One sign bit a dimension of ``vectors - centre``, packed (uint8); in chunks, so a
    large matrix never has a full-size temporary."""
    out = np.empty((len(vectors), (vectors.shape[1] + 7) // 8), dtype=np.uint8)
    for lo in range(0, len(vectors), SCAN_CHUNK):
        out[lo : lo + SCAN_CHUNK] = np.packbits(
            np.asarray(vectors[lo : lo + SCAN_CHUNK], dtype=np.float32) > centre, axis=1
        )
    return out


def build_class_ivf(vectors: np.ndarray, offsets: np.ndarray, mean: np.ndarray) -> ClassIVF:
    """Codes of the class-mean vectors of the classes that have descriptors."""
    coded = np.flatnonzero(np.diff(offsets)).astype(np.int64)
    means = mean if len(coded) == len(mean) else mean[coded]  # no copy when every class has descriptors
    centre = (means.mean(axis=0, dtype=np.float64) if len(coded) else np.zeros(mean.shape[1])).astype(np.float32)
    return ClassIVF(vectors, np.asarray(offsets, dtype=np.int64), encode(means, centre), coded, centre)


def tune_probe(ivf: ClassIVF, queries: np.ndarray, k: int = 10, target: float = RECALL_TARGET) -> tuple[int, float]:
    """The smallest number of classes to probe (MIN_PROBE, then x1.5 steps) whose recall@k
    on ``queries`` reaches ``target``, and that recall."""
    _, exact = exact_search(ivf.vectors, queries, k)
    probe = min(MIN_PROBE, max(1, len(ivf.codes)))
    while True:
        got = recall(ivf.search(queries, k, probe)[1], exact)
        if got >= target or probe >= len(ivf.codes):
            return probe, got
        probe = min(len(ivf.codes), probe + max(1, probe // 2))


@dataclass
class FaissSearch:
    """A FAISS index; ``ids`` maps its labels to positions when they are descriptor keys
    (the older layout: ascending keys in label order)."""

    index: faiss.Index
    ids: np.ndarray | None = None

    @property
    def exact(self) -> bool:
        inner = faiss.downcast_index(self.index.index) if isinstance(self.index, faiss.IndexIDMap) else self.index
        return isinstance(inner, faiss.IndexFlat)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.index.ntotal)
        sims, labels = faiss_search(self.index, queries, k)
        if self.ids is None:
            return sims, labels.astype(np.int64)
        positions = np.searchsorted(self.ids, labels)
        return sims, np.where(labels >= 0, positions, -1)
