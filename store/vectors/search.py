"""Search primitives the retrieval indexes share: the exact scan of a (memory-mapped)
matrix in chunks, ordering hits, and FAISS searches with their threads bounded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import faiss
import numpy as np

SMALL_BATCH = 8  # fewer queries than this are searched by FAISS on one thread
SCAN_CHUNK = 1 << 16  # rows scored at a time by an exact scan


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top ``k`` rows of ``vectors`` by inner product, best first, scanning in
    chunks so that a memory-mapped million-row matrix is never multiplied whole."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    n = len(vectors)
    k = min(k, n)
    best_s = np.full((len(queries), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(queries), 0), dtype=np.int64)
    for lo in range(0, n, SCAN_CHUNK):
        sims = queries @ np.asarray(vectors[lo : lo + SCAN_CHUNK]).T
        if sims.shape[1] > k:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
        best_s = np.concatenate([best_s, np.take_along_axis(sims, part, axis=1)], axis=1)
        best_i = np.concatenate([best_i, part + lo], axis=1)
        if best_s.shape[1] > k:
            keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
            best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
    return sort_hits(best_s, best_i)


def sort_hits(sims: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best first; equal similarities in position order."""
    order = np.lexsort((positions, -sims), axis=1) if sims.size else np.zeros(sims.shape, dtype=np.int64)
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(positions, order, axis=1)


@contextmanager
def faiss_threads(n: int) -> Iterator[None]:
    """FAISS's OpenMP threads limited to ``n`` inside the block. Training on a busy shared
    machine: a 32-sub-quantiser PQ on 3,000 vectors took 28 s on two spinning threads
    against 1 s on one (load average 8 on 2 cores)."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def faiss_search(index: faiss.Index | faiss.IndexBinary, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``, single-threaded for a few queries: FAISS's OpenMP threads cost more
    than they save on one query (measured 6 ms vs 1 ms at 10k x 512 on 2 cores) and keep
    spinning afterwards, slowing the BLAS work that follows."""
    if len(queries) >= SMALL_BATCH:
        return index.search(queries, k)
    with faiss_threads(1):
        return index.search(queries, k)
