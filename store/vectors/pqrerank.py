"""The default approximate retrieval index: FAISS 4-bit product-quantisation fast-scan over
the centred descriptor vectors, its best ``depth`` candidates re-ranked exactly from the
fp32 vectors (``vectors.npy``, the one exact copy).

Chosen by measurement on CLIP-shaped data (``bench/run.py``'s query section and
:mod:`bench.synthetic`), against an HNSW graph, an IVF and the class inverted
file this replaces, all of which lose most of their recall for image queries, which lie far
from every text vector across the modality gap. The codes take ``M / 2`` bytes a descriptor
(128 at the default ``PQ256x4fs``, 6% of the fp32 vectors). Centring first matters: every text vector shares the
text cone's axis, which would otherwise spend the quantiser's codes on what all vectors
have in common; an inner product ranks ``x - centre`` as it ranks ``x``.

The re-rank depth is tuned (:mod:`whyclip.store.vectors.recall_tuning`) on image-like
queries; the index file is read on first search, and checked against its digest.

One query scans every code, on one core by FAISS (about 16 ms for 1M codes of 128 bytes
here; two cores halve it, so the scan is bound by the core, not by memory). The codes are
therefore searched as shards of :data:`SHARD_ROWS` descriptors, cut from the one stored index (no second file, no second
copy), on up to one core each: 1M descriptors, 4 shards on 2 cores, 9 ms. The shard count
follows from the library's size alone and the shards' candidates are merged by (approximate
score, position), so the answer does not depend on the machine's core count.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from whyclip.store.errors import LibraryNotFound, StoreError
from whyclip.store.vectors.search import faiss_search, faiss_threads, sort_hits

PATTERN = re.compile(r"^PQ(\d+)x4fs\+rerank$")
DEFAULT = "PQ256x4fs+rerank"
PQ_FILE = "pq_fastscan.faiss"
TRAIN_SAMPLE = 20_000  # rows the 16-centroid sub-quantisers are trained on (a seeded sample)
ADD_CHUNK = 1 << 16
TRAIN_THREADS = 1  # see search.faiss_threads: spinning OpenMP threads cost far more than they save on a shared box
SHARD_ROWS = 1 << 18  # descriptors a shard (bench at 1M, 2 cores: 1 shard 15.7 ms, 2: 8.9, 4: 9.3, 8: 9.5, 16: 10.2)
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    """The shard searchers: one thread a core, each running FAISS on one OpenMP thread."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(
                cores(), thread_name_prefix="whyclip-pq", initializer=faiss.omp_set_num_threads, initargs=(1,)
            )
        return _POOL


def default_for(dim: int) -> str:
    """Two dimensions a 4-bit code (``PQ256x4fs+rerank`` at 512; one a code for odd ``dim``)."""
    return f"PQ{dim // 2 if dim % 2 == 0 else dim}x4fs+rerank"


def is_pq_rerank(factory: str) -> bool:
    return PATTERN.match(factory) is not None


def sub_quantizers(factory: str, dim: int) -> int:
    """The ``M`` of ``PQ<M>x4fs+rerank``."""
    found = PATTERN.match(factory)
    if found is None:
        raise StoreError(f"index {factory!r} is not a PQ re-rank index (PQ<M>x4fs+rerank)")
    return int(found.group(1))


@dataclass
class PQRerank:
    """``search`` answers with the exact similarities of the best ``k`` of the ``depth``
    candidates that the PQ codes rank highest."""

    vectors: np.ndarray
    centre: np.ndarray
    depth: int
    index: faiss.IndexPQFastScan | None = None
    path: Path | None = None  # read on first search when ``index`` is None
    digest: str | None = None
    _shards: list[tuple[int, faiss.IndexPQFastScan]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    exact = False

    def shards(self) -> list[tuple[int, faiss.IndexPQFastScan]]:
        """``(first position, index)`` of each shard, the stored index read and cut on first use."""
        if self._shards is None:
            with self._lock:
                if self._shards is None:
                    if self.index is None:
                        if self.path is None:
                            raise StoreError("a PQ re-rank searcher needs its index or the path of its file")
                        try:
                            data = self.path.read_bytes()
                        except FileNotFoundError:  # the version was deleted after this reader loaded it
                            raise LibraryNotFound(
                                "a library version was deleted while in use (its retrieval index is "
                                "gone): load it again"
                            ) from None
                        if self.digest and file_digest(data) != self.digest:
                            raise StoreError(
                                f"the retrieval index {self.path} differs from the one built: re-ingest the library"
                            )
                        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
                        if not isinstance(index, faiss.IndexPQFastScan):
                            raise StoreError(
                                f"the retrieval index {self.path} is not a PQ fast-scan index: re-ingest the library"
                            )
                        self.index = index
                    self._shards = split(self.index)
                    if len(self._shards) > 1:
                        self.index = None  # the shards hold the codes now
        return self._shards

    def candidates(self, queries: np.ndarray, depth: int) -> np.ndarray:
        """(B, depth) candidate positions by approximate score, best first (-1: none)."""

        shards = self.shards()
        if len(shards) == 1:
            return faiss_search(shards[0][1], queries, min(depth, shards[0][1].ntotal))[1]
        # each shard on a pool thread, FAISS on one OpenMP thread there (it releases the GIL);
        # a core's worth of shards at a time, merged into the best ``depth`` so far, so a
        # deep search of many shards (the depth tuning: 400 queries x 8000 at 10M descriptors,
        # 39 shards) holds a few shards' candidates, not all of them
        best_s = np.zeros((len(queries), 0), dtype=np.float32)
        best_p = np.zeros((len(queries), 0), dtype=np.int64)
        step = cores()
        for g in range(0, len(shards), step):
            group = shards[g : g + step]
            found = list(_pool().map(lambda shard: shard[1].search(queries, min(depth, shard[1].ntotal)), group))
            sims = np.concatenate([best_s, *(f[0] for f in found)], axis=1)
            positions = np.concatenate(
                [best_p, *(np.where(f[1] >= 0, f[1] + lo, -1) for f, (lo, _) in zip(found, group, strict=True))],
                axis=1,
            )
            sims = np.where(positions >= 0, sims, -np.inf)
            order = np.lexsort((positions, -sims), axis=1)[:, :depth]
            best_s, best_p = np.take_along_axis(sims, order, axis=1), np.take_along_axis(positions, order, axis=1)
        return best_p

    def search(self, queries: np.ndarray, k: int, depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self.vectors))
        return rerank(self.vectors, queries, self.candidates(queries, max(depth or self.depth, k)), k)


def rerank(vectors: np.ndarray, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` of each row's candidates, best first."""

    sims = np.full((len(queries), k), -np.inf, dtype=np.float32)
    positions = np.full((len(queries), k), -1, dtype=np.int64)
    for i, (q, row) in enumerate(zip(queries, candidates, strict=True)):
        c = np.sort(row[row >= 0])
        if not len(c):
            continue
        s = np.asarray(vectors[c]) @ q
        kk = min(k, len(c))
        top = np.argpartition(-s, kk - 1)[:kk] if kk < len(c) else np.arange(kk)
        sims[i, :kk], positions[i, :kk] = s[top], c[top]
    return sort_hits(sims, positions)


def split(index: faiss.IndexPQFastScan, rows: int | None = None) -> list[tuple[int, faiss.IndexPQFastScan]]:
    """The index as ``ceil(ntotal / rows)`` shards of whole 32-code blocks, ``(first
    position, shard)``, each sharing the trained quantiser. A fast-scan index packs its
    codes in blocks of ``bbs`` vectors laid end to end, so a shard is a slice of the codes."""
    rows = rows or SHARD_ROWS
    parts = max(1, -(-index.ntotal // rows))
    if parts == 1:
        return [(0, index)]
    # faiss's bundled stubs omit IndexFastScan's ntotal2 and get_block_stride (both are in its SWIG API)
    blocks = index.ntotal2 // index.bbs  # type: ignore[attr-defined]
    stride = index.get_block_stride()  # type: ignore[attr-defined]
    codes = faiss.AlignedTable_to_array(index.codes)
    cuts = [round(blocks * i / parts) for i in range(parts + 1)]
    out = []
    for a, b in itertools.pairwise(cuts):
        shard = faiss.IndexPQFastScan(index.d, index.M, index.nbits, index.metric_type, index.bbs)
        shard.pq = index.pq
        shard.is_trained = True
        shard.implem, shard.qbs = index.implem, index.qbs
        shard.ntotal = min(index.ntotal, b * index.bbs) - a * index.bbs
        shard.ntotal2 = (b - a) * index.bbs  # type: ignore[attr-defined]  # (see above)
        faiss.copy_array_to_AlignedTable(np.ascontiguousarray(codes[a * stride : b * stride]), shard.codes)
        out.append((a * index.bbs, shard))
    return out


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def build_pq(vectors: np.ndarray, factory: str, seed: int = 0) -> tuple[faiss.IndexPQFastScan, np.ndarray]:
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

    with faiss_threads(TRAIN_THREADS):
        index.train(np.ascontiguousarray(np.asarray(vectors[sample]) - centre))
    for lo in range(0, n, ADD_CHUNK):
        index.add(np.ascontiguousarray(np.asarray(vectors[lo : lo + ADD_CHUNK]) - centre))
    return index, centre


def serialize(index: faiss.Index) -> bytes:
    return faiss.serialize_index(index).tobytes()
