"""Index files of one library version: a FAISS index keyed by descriptor ids, plus the
class matrices for exact scoring.

A version's files live in ``<home>/indexes/<store id>/<index key>/``; the store id comes
from the database, so two databases can never read each other's files, and a manifest
inside the folder is checked against the database row on every load.

The library-wide retrieval index is exact (``Flat``) up to ``HNSW_ABOVE`` descriptors and
``HNSW32`` above, or any FAISS factory string the user gives; an approximate index has its
recall@10 measured against exact search when it is built.

Exact scoring reads the unit vectors from ``vectors.npy``, memory-mapped by numpy, so
processes share one copy in the page cache. An approximate index is memory-mapped by FAISS
too (``IO_FLAG_MMAP_IFC``); its searches touch few vectors. A flat index is read into memory
instead: scanning FAISS's mapping measured 7x slower than numpy's (80 ms vs 11 ms for
100k x 512), and flat indexes are small (50k descriptors by default).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from .errors import InputError, StoreError
from .scoring import ClassMatrices

INDEX_FILE = "descriptors.faiss"
VECTORS_FILE = "vectors.npy"
MANIFEST_FILE = "manifest.json"
_ARRAYS = ("mean", "centroid", "baseline", "offsets")
SMALL_BATCH = 8  # fewer queries than this are searched on one thread
HNSW_ABOVE = 50_000  # descriptors; a flat search of 50k x 512 takes ~5 ms on one core
DEFAULT_APPROXIMATE = "HNSW32"
EF_SEARCH = 128
RECALL_QUERIES = 200


@dataclass(frozen=True)
class IndexFiles:
    """The loaded files of one library version. ``vectors`` are the exact unit descriptor
    vectors in label order (read-only, memory-mapped)."""

    index: faiss.Index
    matrices: ClassMatrices
    norms: np.ndarray
    vectors: np.ndarray


def choose_factory(n_descriptors: int, factory: str | None) -> str:
    return factory or ("Flat" if n_descriptors <= HNSW_ABOVE else DEFAULT_APPROXIMATE)


def check_factory(factory: str, dim: int) -> faiss.Index:
    """An empty index for ``factory``, or :class:`InputError` saying the string is not valid."""
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:120]
        raise InputError(f"FAISS cannot build index {factory!r} ({first}): use e.g. 'Flat' or 'HNSW32'") from None


def build_index(vectors: np.ndarray, ids: np.ndarray, factory: str = "Flat") -> faiss.Index:
    """An inner-product index from a FAISS factory string, whose ids are descriptor keys."""
    inner = check_factory(factory, vectors.shape[1])
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if not inner.is_trained:
        if len(data) == 0:
            raise InputError(f"index {factory!r} needs training data; the library has no descriptors: use 'Flat'")
        inner.train(data)
    hnsw = _hnsw(inner)
    if hnsw is not None:
        hnsw.hnsw.efSearch = EF_SEARCH
    index = faiss.IndexIDMap2(inner)
    if len(ids):
        index.add_with_ids(data, np.asarray(ids, dtype=np.int64))
    return index


def _hnsw(index: faiss.Index):
    inner = faiss.downcast_index(index)
    return inner if isinstance(inner, faiss.IndexHNSW) else None


def is_exact(index: faiss.Index) -> bool:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    return isinstance(inner, faiss.IndexFlat)


def measure_recall(index: faiss.Index, vectors: np.ndarray, matrices: ClassMatrices, k: int = 10) -> float:
    """recall@k of ``index`` against exact search, for image-like queries: the normalised
    mean vectors of a seeded sample of classes, nudged off-centre."""
    if is_exact(index) or index.ntotal == 0:
        return 1.0
    rng = np.random.default_rng(0)
    picks = rng.choice(len(matrices.mean), size=min(RECALL_QUERIES, len(matrices.mean)), replace=False)
    queries = matrices.mean[picks] + 0.5 * rng.standard_normal((len(picks), vectors.shape[1])).astype(np.float32) / np.sqrt(vectors.shape[1])
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    k = min(k, index.ntotal)
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    ids = faiss.vector_to_array(index.id_map)
    _, found = index.search(queries, k)
    hits = sum(len(set(ids[e]) & set(f)) for e, f in zip(exact, found))
    return hits / (len(queries) * k)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``index.search``, single-threaded for a few queries: FAISS's OpenMP threads cost more
    than they save on one query (measured 6 ms vs 1 ms at 10k x 512 on 2 cores) and keep
    spinning afterwards, slowing the BLAS work that follows."""
    if len(queries) >= SMALL_BATCH:
        return index.search(queries, k)
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(threads)


def index_ids(index: faiss.Index) -> np.ndarray:
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def write_index_files(
    folder: Path, index: faiss.Index, vectors: np.ndarray, matrices: ClassMatrices, norms: np.ndarray, manifest: dict
) -> None:
    """Write every file into a temporary sibling, then rename it into place."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        faiss.write_index(index, str(tmp / INDEX_FILE))
        np.save(tmp / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
        for name in _ARRAYS:
            np.save(tmp / f"class_{name}.npy", getattr(matrices, name))
        np.save(tmp / "descriptor_norms.npy", norms.astype(np.float32))
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_index_files(folder: Path, expected: dict) -> IndexFiles:
    """Load (memory-map) a version's files, refusing ones that belong to another database."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise StoreError(
            f"index files for this library are missing at {folder}: "
            "point --home at the data directory that holds them, or re-ingest the library"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key, value in expected.items():
        if manifest.get(key) != value:
            raise StoreError(
                f"index files at {folder} do not belong to this database "
                f"({key} is {manifest.get(key)!r}, expected {value!r}): re-ingest the library"
            )
    mmap = manifest.get("index_factory", "Flat") != "Flat"
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(folder / INDEX_FILE), flags)
    vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
    arrays = {name: np.load(folder / f"class_{name}.npy", mmap_mode="r") for name in _ARRAYS}
    arrays["offsets"] = np.asarray(arrays["offsets"])
    norms = np.load(folder / "descriptor_norms.npy", mmap_mode="r")
    return IndexFiles(index=index, matrices=ClassMatrices(**arrays), norms=norms, vectors=vectors)
