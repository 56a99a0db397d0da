"""The default approximate retrieval index: FAISS 4-bit product-quantisation fast-scan over
the centred descriptor vectors, its best ``depth`` candidates re-ranked exactly from the
fp32 vectors (``vectors.npy``, the one exact copy).

Chosen by measurement on CLIP-shaped data (``bench/run.py``'s query section and
:mod:`whyclip.store.vectors.synthetic`), against an HNSW graph, an IVF and the class inverted
file this replaces, all of which lose most of their recall for image queries, which lie far
from every text vector across the modality gap. The codes take ``M / 2`` bytes a descriptor
(128 at the default ``PQ256x4fs``, 6% of the fp32 vectors). Centring first matters: every text vector shares the
text cone's axis, which would otherwise spend the quantiser's codes on what all vectors
have in common; an inner product ranks ``x - centre`` as it ranks ``x``.

The re-rank depth is calibrated (:mod:`whyclip.store.vectors.calibration`) on image-like
queries; the index file is read on first search, and checked against its digest.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from whyclip.store.errors import StoreError

PATTERN = re.compile(r"^PQ(\d+)x4fs\+rerank$")
DEFAULT = "PQ256x4fs+rerank"
PQ_FILE = "pq_fastscan.faiss"
TRAIN_SAMPLE = 20_000  # rows the 16-centroid sub-quantisers are trained on (a seeded sample)
ADD_CHUNK = 1 << 16
TRAIN_THREADS = 1  # see retrieval.faiss_threads: spinning OpenMP threads cost far more than they save on a shared box


def default_for(dim: int) -> str:
    """Two dimensions a 4-bit code (``PQ256x4fs+rerank`` at 512; one a code for odd ``dim``)."""
    return f"PQ{dim // 2 if dim % 2 == 0 else dim}x4fs+rerank"


def is_pq_rerank(factory: str) -> bool:
    return PATTERN.match(factory) is not None


def sub_quantizers(factory: str, dim: int) -> int:
    """The ``M`` of ``PQ<M>x4fs+rerank``."""
    return int(PATTERN.match(factory).group(1))


@dataclass
class PQRerank:
    """``search`` answers with the exact similarities of the best ``k`` of the ``depth``
    candidates that the PQ codes rank highest."""

    vectors: np.ndarray
    centre: np.ndarray
    depth: int
    index: faiss.Index | None = None
    path: Path | None = None  # read on first search when ``index`` is None
    digest: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    exact = False

    def _index(self) -> faiss.Index:
        if self.index is None:
            with self._lock:
                if self.index is None:
                    data = self.path.read_bytes()
                    if self.digest and file_digest(data) != self.digest:
                        raise StoreError(f"the retrieval index {self.path} differs from the one built: re-ingest the library")
                    self.index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return self.index

    def candidates(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """(B, depth) candidate positions by approximate score, best first (-1: none)."""
        from whyclip.store.vectors.retrieval import faiss_search

        index = self._index()
        return faiss_search(index, queries, min(depth, index.ntotal))[1]

    def search(self, queries: np.ndarray, k: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self.vectors))
        return rerank(self.vectors, queries, self.candidates(queries, max(depth or self.depth, k)), k)


def rerank(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` of each row's candidates, best first."""
    from whyclip.store.vectors.retrieval import sort_hits

    sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    positions = np.full((len(queries), k), -1, dtype=np.int64)
    for i, (q, row) in enumerate(zip(queries, candidates)):
        c = np.sort(row[row >= 0])
        if not len(c):
            continue
        s = np.asarray(vectors[c]) @ q
        kk = min(k, len(c))
        top = np.argpartition(-s, kk - 1)[:kk] if kk < len(c) else np.arange(kk)
        sims[i, :kk], positions[i, :kk] = s[top], c[top]
    return sort_hits(sims, positions)


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def build_pq(vectors: np.ndarray, factory: str, seed: int = 0) -> tuple[faiss.Index, np.ndarray]:
    """A trained and filled PQ fast-scan index over ``vectors - centre``, and the centre.
    The quantiser is trained on a seeded sample of at most :data:`TRAIN_SAMPLE` rows."""
    n, dim = vectors.shape
    m = sub_quantizers(factory, dim)
    if dim % m:
        raise StoreError(f"index {factory!r}: the dimension {dim} is not a multiple of {m} sub-quantisers")
    centre = np.zeros(dim, dtype=np.float64)
    for lo in range(0, n, ADD_CHUNK):
        centre += np.asarray(vectors[lo : lo + ADD_CHUNK], dtype=np.float64).sum(axis=0)
    centre = (centre / max(n, 1)).astype(np.float32)
    index = faiss.IndexPQFastScan(dim, m, 4, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, size=min(n, TRAIN_SAMPLE), replace=False))
    from whyclip.store.vectors.retrieval import faiss_threads

    with faiss_threads(TRAIN_THREADS):
        index.train(np.ascontiguousarray(np.asarray(vectors[sample]) - centre))
    for lo in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(np.asarray(vectors[lo : lo + ADD_CHUNK]) - centre))
    return index, centre


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()
