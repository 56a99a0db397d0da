"""Index files of one library version: the exact descriptor vectors, what exact scoring
needs beside them, and what library-wide retrieval needs.

A version's files live in ``<home>/indexes/<store id>/<index key>/``; the store id comes
from the database, so two databases can never read each other's files, and a manifest
inside the folder is checked against the database row on every load. The files are
written *before* the version's rows (see ``Store.write_library``), so the manifest names
the version by its index key, a random id the row records.

Layout 2 (this one) keeps one copy of the vectors, ``vectors.npy`` (fp32 unit vectors in
label order, memory-mapped by numpy so processes share one copy in the page cache), plus
``descriptor_norms.npy``, ``class_baseline.npy`` and ``class_offsets.npy``. The class-mean
matrix is derived from the vectors when a library is loaded and the centroid matrix on
first use: each is (classes x dim) fp32, which at ten descriptors a class would add 10% to
the files. Retrieval (see :mod:`whyclip.store.vectors.retrieval`) is an exact scan (``Flat``) up to
``APPROXIMATE_ABOVE`` descriptors and a class inverted file over the same vectors
(``ClassIVF``, whose only files are its parameters in the manifest: its codes are derived
from the class means on load too) above; any FAISS factory string a
user gives builds ``descriptors.faiss`` instead, whose ids are descriptor positions. An
approximate index has its recall@10 measured against exact search when it is built.

Layout 1 (before schema 2) is still read: a FAISS index keyed by descriptor ids beside the
vectors, and stored class matrices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from whyclip.store.errors import InputError, StoreError
from whyclip.store.vectors.retrieval import (
    RECALL_TARGET,
    ClassIVF,
    FaissSearch,
    FlatScan,
    build_class_ivf,
    calibrate_probe,
    exact_search,
    recall,
    recall_queries,
)
from whyclip.store.scoring import ClassMatrices, class_sums

log = logging.getLogger(__name__)

INDEX_FILE = "descriptors.faiss"
VECTORS_FILE = "vectors.npy"
MANIFEST_FILE = "manifest.json"
LAYOUT = 2
APPROXIMATE_ABOVE = 50_000  # descriptors; an exact numpy scan of 50k x 512 takes a few ms
DEFAULT_APPROXIMATE = "ClassIVF"
OURS = ("Flat", "ClassIVF")  # built by whyclip over vectors.npy, no FAISS file
EF_SEARCH = 128
CALIBRATION_NOISE = (0.4, 1.0)  # wider than the reported sample's 0.5: the chosen probe has margin


@dataclass(frozen=True)
class IndexFiles:
    """The loaded files of one library version. ``vectors`` are the exact unit descriptor
    vectors in label order (read-only, memory-mapped); ``searcher`` answers retrieval with
    descriptor positions; ``descriptor_ids`` are the database keys of the positions when
    the files record them (layout 1), else None."""

    searcher: FlatScan | ClassIVF | FaissSearch
    matrices: ClassMatrices
    norms: np.ndarray
    vectors: np.ndarray
    params: dict
    descriptor_ids: np.ndarray | None = None


@dataclass
class Built:
    """A retrieval index ready to write: its searcher, parameters and files."""

    factory: str
    searcher: FlatScan | ClassIVF | FaissSearch
    params: dict = field(default_factory=dict)
    arrays: dict = field(default_factory=dict)  # file stem -> array
    faiss_index: faiss.Index | None = None


def choose_factory(n_descriptors: int, factory: str | None) -> str:
    return factory or ("Flat" if n_descriptors <= APPROXIMATE_ABOVE else DEFAULT_APPROXIMATE)


def check_factory(factory: str, dim: int) -> faiss.Index | None:
    """An empty FAISS index for ``factory`` (None for whyclip's own), or
    :class:`InputError` saying the string is not valid."""
    if factory in OURS:
        return None
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:120]
        raise InputError(
            f"FAISS cannot build index {factory!r} ({first}): use e.g. 'Flat', 'ClassIVF' or 'HNSW32'"
        ) from None


def build_faiss_index(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product FAISS index from a factory string; its ids are row positions."""
    index = check_factory(factory, vectors.shape[1])
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if not index.is_trained:
        if len(data) == 0:
            raise InputError(f"index {factory!r} needs training data; the library has no descriptors: use 'Flat'")
        index.train(data)
    inner = faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = EF_SEARCH
    if len(data):
        try:
            index.add(data)
        except RuntimeError:  # an IDMap factory: it wants the ids said
            index.add_with_ids(data, np.arange(len(data), dtype=np.int64))
    return index


def build_retrieval(vectors: np.ndarray, matrices: ClassMatrices, factory: str) -> Built:
    """The retrieval index ``factory`` over ``vectors``, its parameters chosen."""
    if factory == "Flat":
        return Built(factory, FlatScan(vectors))
    if factory == "ClassIVF":
        ivf = build_class_ivf(vectors, matrices.offsets, matrices.mean)
        if len(ivf.codes) == 0:
            return Built("Flat", FlatScan(vectors))
        sample = recall_queries(matrices.mean, vectors.shape[1], seed=1, noise=CALIBRATION_NOISE)
        ivf.probe, calibrated = calibrate_probe(ivf, sample)
        params = {"probe": ivf.probe, "calibration_recall": calibrated, "recall_target": RECALL_TARGET,
                  "code_bits": int(ivf.codes.shape[1] * 8), "codes_sha256": codes_digest(ivf.codes)}  # fmt: skip
        return Built(factory, ivf, params)
    index = build_faiss_index(vectors, factory)
    return Built(factory, FaissSearch(index), faiss_index=index)


def codes_digest(codes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(codes).tobytes()).hexdigest()[:16]


def measure_recall(searcher, vectors: np.ndarray, mean: np.ndarray, k: int = 10) -> float:
    """recall@k of ``searcher`` against exact search, for image-like queries: the normalised
    mean vectors of a seeded sample of classes, nudged off-centre."""
    if searcher.exact or len(vectors) == 0:
        return 1.0
    queries = recall_queries(mean, vectors.shape[1], seed=0)
    _, exact = exact_search(vectors, queries, k)
    _, found = searcher.search(queries, k)
    return recall(found, exact)


def write_index_files(folder: Path, built: Built, vectors: np.ndarray, matrices: ClassMatrices, norms: np.ndarray,
                      manifest: dict) -> None:  # fmt: skip
    """Write every file into a temporary sibling, then rename it into place."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        np.save(tmp / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
        np.save(tmp / "class_baseline.npy", np.asarray(matrices.baseline, dtype=np.float32))
        np.save(tmp / "class_offsets.npy", np.asarray(matrices.offsets, dtype=np.int64))
        np.save(tmp / "descriptor_norms.npy", np.asarray(norms, dtype=np.float32))
        for stem, array in built.arrays.items():
            np.save(tmp / f"{stem}.npy", array)
        if built.faiss_index is not None:
            faiss.write_index(built.faiss_index, str(tmp / INDEX_FILE))
        (tmp / MANIFEST_FILE).write_text(json.dumps({"layout": LAYOUT, **manifest}, indent=2), encoding="utf-8")
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_index_files(folder: Path, expected: dict) -> IndexFiles:
    """Load (memory-map) a version's files, refusing ones that belong to another database.
    ``expected`` holds ``store_id``, ``n_descriptors``, ``index_key`` and ``library_id``;
    a manifest is checked on the keys it has (layout 1 names the library id, 2 the key)."""
    manifest_path = folder / MANIFEST_FILE
    if not manifest_path.is_file():
        raise StoreError(
            f"index files for this library are missing at {folder}: "
            "point --home at the data directory that holds them, or re-ingest the library"
        )
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key, value in expected.items():
        if key in manifest and manifest[key] != value:
            raise StoreError(
                f"index files at {folder} do not belong to this database "
                f"({key} is {manifest.get(key)!r}, expected {value!r}): re-ingest the library"
            )
    layout = manifest.get("layout", 1)
    if layout > LAYOUT:
        raise StoreError(f"index files at {folder} have layout {layout}, newer than this whyclip reads: upgrade whyclip")
    vectors = np.load(folder / VECTORS_FILE, mmap_mode="r")
    norms = np.load(folder / "descriptor_norms.npy", mmap_mode="r")
    baseline = np.load(folder / "class_baseline.npy", mmap_mode="r")
    offsets = np.asarray(np.load(folder / "class_offsets.npy"), dtype=np.int64)
    factory = manifest.get("index_factory", "Flat")
    if layout == 1:
        mean = np.load(folder / "class_mean.npy", mmap_mode="r")
        centroid = np.load(folder / "class_centroid.npy", mmap_mode="r")
        matrices = ClassMatrices(mean, centroid, baseline, offsets)
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if factory != "Flat" else 0
        index = faiss.read_index(str(folder / INDEX_FILE), flags)
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        if len(ids) > 1 and not np.all(np.diff(ids) > 0):
            raise StoreError(f"the index at {folder} is not in descriptor order: re-ingest the library")
        return IndexFiles(FaissSearch(index, ids), matrices, norms, vectors, {}, ids)
    matrices = ClassMatrices(class_sums(vectors, offsets, baseline), None, baseline, offsets, vectors=vectors, norms=norms)
    params = manifest.get("index_params", {})
    if factory == "Flat":
        searcher = FlatScan(vectors)
    elif factory == "ClassIVF":  # its codes are derived from the class means, like at build time
        searcher = build_class_ivf(vectors, offsets, matrices.mean)
        searcher.probe = int(params["probe"])
        if codes_digest(searcher.codes) != params.get("codes_sha256"):
            log.warning("class codes of %s differ from those measured at build: its recall may differ slightly", folder)
    else:
        searcher = FaissSearch(faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY))
    return IndexFiles(searcher, matrices, norms, vectors, params)
