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
``APPROXIMATE_ABOVE`` descriptors and, above, PQ fast-scan codes re-ranked exactly from the
same vectors (``PQ256x4fs+rerank``: ``pq_fastscan.faiss``, its digest in the manifest,
read on first search, and ``pq_centre.npy``). Its re-rank depth is tuned on
image-like queries (:mod:`whyclip.store.vectors.recall_tuning`), and where no depth reaches
the target recall faster than the exact scan, the version answers exactly and says why
(``exact_fallback``). Any FAISS factory string a user gives builds ``descriptors.faiss``
instead, whose ids are descriptor positions, its ``nprobe`` / ``efSearch`` tuned the
same way. Libraries built with the class inverted file (``ClassIVF``, parameters only:
its codes are derived from the class means on load) still load. The database holds the
current parameters (re-tuned after an eval); the manifest those of the build.

Layout 1 (before schema 2) is still read: a FAISS index keyed by descriptor ids beside the
vectors, and stored class matrices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from whyclip.store.errors import InputError, StoreError
from whyclip.store.method import ClassMatrices, class_sums
from whyclip.store.vectors import factory_bounds, pqrerank, recall_tuning
from whyclip.store.vectors.pqrerank import PQRerank, build_pq, file_digest, is_pq_rerank, serialize
from whyclip.store.vectors.recall_tuning import (
    RECALL_TARGET,
    Queries,
    knob,
    recall,
    set_knob,
    tune_depth,
    tune_faiss,
)
from whyclip.store.vectors.retrieval import (
    ClassIVF,
    FaissSearch,
    FlatScan,
    build_class_ivf,
    tune_probe,
)
from whyclip.store.vectors.search import exact_search, faiss_threads

log = logging.getLogger(__name__)

INDEX_FILE = "descriptors.faiss"
VECTORS_FILE = "vectors.npy"
MANIFEST_FILE = "manifest.json"
LAYOUT = 2
APPROXIMATE_ABOVE = 50_000  # descriptors; an exact numpy scan of 50k x 512 takes a few ms
DEFAULT_APPROXIMATE = pqrerank.DEFAULT
OURS = ("Flat", "ClassIVF")  # built by whyclip over vectors.npy, no FAISS file (and PQ<M>x4fs+rerank)
EF_SEARCH = 128


@dataclass(frozen=True)
class IndexFiles:
    """The loaded files of one library version. ``vectors`` are the exact unit descriptor
    vectors in label order (read-only, memory-mapped); ``searcher`` answers retrieval with
    descriptor positions (the exact scan where tuning said the approximate index
    could not beat it); ``descriptor_ids`` are the database keys of the positions when
    the files record them (layout 1), else None."""

    searcher: FlatScan | ClassIVF | FaissSearch | PQRerank
    matrices: ClassMatrices
    norms: np.ndarray
    vectors: np.ndarray
    params: dict[str, Any]
    descriptor_ids: np.ndarray | None = None
    folder: Path | None = None


@dataclass
class Built:
    """A retrieval index ready to write: its searcher, parameters and files."""

    factory: str
    searcher: FlatScan | ClassIVF | FaissSearch | PQRerank
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # file stem -> array
    faiss_index: faiss.Index | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)  # file name -> bytes

    @property
    def recall_at_10(self) -> float:
        exact = self.searcher.exact or "exact_fallback" in self.params
        return 1.0 if exact else float(self.params.get("recall_at_10", 1.0))


def choose_factory(n_descriptors: int, factory: str | None, dim: int = 512) -> str:
    """The index to build: the user's, else the exact scan up to :data:`APPROXIMATE_ABOVE`
    descriptors, else PQ codes of two dimensions a byte (``PQ256x4fs+rerank`` at 512)."""
    if factory:
        return factory
    return "Flat" if n_descriptors <= APPROXIMATE_ABOVE else pqrerank.default_for(dim)


def check_factory(factory: str, dim: int) -> faiss.Index | None:
    """An empty FAISS index for ``factory`` (None for whyclip's own), or
    :class:`InputError` saying the string is not valid. Its numbers are bounded first
    (:func:`~whyclip.store.vectors.factory_bounds.check_factory_bounds`): FAISS allocates an
    IVF's lists when it creates the index."""
    if factory in OURS:
        return None
    factory_bounds.check_factory_bounds(factory)
    if is_pq_rerank(factory):
        m = pqrerank.sub_quantizers(factory, dim)
        if m < 1 or dim % m:
            raise InputError(
                f"index {factory!r}: the dimension {dim} is not a multiple of {m}: use e.g. {pqrerank.DEFAULT!r}"
            )
        return None
    try:
        return faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:120]
        raise InputError(
            f"FAISS cannot build index {factory!r} ({first}): use e.g. 'Flat', {pqrerank.DEFAULT!r} or 'HNSW32'"
        ) from None


def build_faiss_index(vectors: np.ndarray, factory: str) -> faiss.Index:
    """An inner-product FAISS index from a factory string; its ids are row positions."""
    index = check_factory(factory, vectors.shape[1])
    if index is None:  # 'Flat' and the PQ re-rank are not FAISS factory strings here
        raise InputError(f"index {factory!r} is not built by FAISS's index factory")
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if not index.is_trained:
        if len(data) == 0:
            raise InputError(f"index {factory!r} needs training data; the library has no descriptors: use 'Flat'")
        with faiss_threads(1):
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


def build_retrieval(vectors: np.ndarray, matrices: ClassMatrices, factory: str, queries: Queries | None) -> Built:
    """The retrieval index ``factory`` over ``vectors``, its parameters tuned on
    ``queries`` (image-like; see :mod:`whyclip.store.vectors.recall_tuning`; only 'Flat'
    goes without)."""
    if factory == "Flat" or len(vectors) == 0:
        return Built("Flat", FlatScan(vectors))
    if queries is None:
        raise InputError(f"index {factory!r} is tuned on image-like queries, and none were given")
    if is_pq_rerank(factory):
        pq_index, centre = build_pq(vectors, factory)
        blob = serialize(pq_index)
        pq = PQRerank(vectors, centre, depth=10, index=pq_index)
        params = tune_depth(pq, vectors, queries)
        pq.depth = params["depth"]
        params["pq_sha256"] = file_digest(blob)
        return Built(factory, pq, params, {"pq_centre": centre}, blobs={pqrerank.PQ_FILE: blob})
    if factory == "ClassIVF":
        ivf = build_class_ivf(vectors, matrices.offsets, matrices.mean)
        if len(ivf.codes) == 0:
            return Built("Flat", FlatScan(vectors))
        q = queries.vectors
        ivf.probe, calibrated = tune_probe(ivf, q[0::2])
        params = {
            "probe": ivf.probe,
            "calibration_recall": calibrated,
            "recall_target": RECALL_TARGET,
            "code_bits": int(ivf.codes.shape[1] * 8),
            "codes_sha256": codes_digest(ivf.codes),
            "calibrated_on": queries.label,
            "query_source": queries.source,
            "recall_at_10": recall(ivf.search(q[1::2], 10)[1], exact_search(vectors, q[1::2], 10)[1]),
        }
        params.update(not_faster(lambda x: ivf.search(x, 10), vectors, q))
        return Built(factory, ivf, params)
    index = build_faiss_index(vectors, factory)
    searcher = FaissSearch(index)
    params = {} if searcher.exact else tune_faiss(searcher, vectors, queries)
    if "warning" in params:
        log.warning("index %s: %s", factory, params["warning"])
    return Built(factory, searcher, params, faiss_index=index)


def retune_recall(files: IndexFiles, factory: str, queries: Queries) -> dict[str, Any] | None:
    """New parameters for a loaded version's approximate index, tuned on ``queries``
    (e.g. after an eval stored image vectors); None when its retrieval is exact by build."""
    params = dict(files.params)
    if is_pq_rerank(factory):
        params = {k: v for k, v in params.items() if k != "exact_fallback"}
        params.update(tune_depth(pq_searcher(files), files.vectors, queries))
        return params
    if factory not in OURS and files.descriptor_ids is None:
        searcher = files.searcher if isinstance(files.searcher, FaissSearch) else faiss_searcher(files)
        if searcher.exact:
            return None
        params.pop("warning", None)
        params.pop("exact_fallback", None)
        params.update(tune_faiss(searcher, files.vectors, queries))
        return params
    if isinstance(files.searcher, ClassIVF):
        ivf = files.searcher
        q = queries.vectors
        probe, calibrated = tune_probe(ivf, q[0::2])
        got = recall(ivf.search(q[1::2], 10, probe)[1], exact_search(files.vectors, q[1::2], 10)[1])
        params.update(
            probe=probe,
            calibration_recall=calibrated,
            calibrated_on=queries.label,
            query_source=queries.source,
            recall_at_10=got,
        )
        params.pop("exact_fallback", None)
        params.update(not_faster(lambda x: ivf.search(x, 10, probe), files.vectors, q))
        return params
    return None


def not_faster(search: Callable[[np.ndarray], object], vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """The two one-query timings, and ``exact_fallback`` when ``search`` is not faster."""
    approx_ms = recall_tuning.median_ms(search, queries)
    exact_ms = recall_tuning.median_ms(lambda x: exact_search(vectors, x, 10), queries)
    out: dict[str, Any] = {"approx_ms": round(approx_ms, 3), "exact_ms": round(exact_ms, 3)}
    if approx_ms >= exact_ms:
        out["exact_fallback"] = f"not faster than the exact scan ({approx_ms:.2f} ms vs {exact_ms:.2f} ms a query)"
    return out


def codes_digest(codes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(codes).tobytes()).hexdigest()[:16]


WRITE_CHUNK = 1 << 15  # rows gathered and written at a time (64 MB at dim 512)


def save_rows(path: Path, source: np.ndarray, rows: np.ndarray, chunk: int | None = None) -> None:
    """Write ``source[rows]`` as float32 to the ``.npy`` file ``path``, ``chunk`` rows at a
    time: the same bytes as ``np.save(path, np.ascontiguousarray(source[rows], np.float32))``
    without that copy in memory. ``source`` may be any (P, d) array, a read-only memory map
    included."""
    chunk = chunk or WRITE_CHUNK
    shape = (len(rows), *source.shape[1:])
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": shape}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            if part[0] >= 0 and part[-1] - part[0] == len(part) - 1 and np.all(np.diff(part) == 1):
                # a run of rows: a view (of a memory map: read once, never gathered)
                block = source[part[0] : part[-1] + 1]
            else:
                block = source[part]
            f.write(np.ascontiguousarray(block, dtype=np.float32).data)


def start_index_files(folder: Path) -> Path:
    """The empty temporary sibling of ``folder`` that the version's files are written into
    (:func:`write_index_files` renames it into place; remove it on failure)."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_vector_files(
    tmp: Path,
    source: np.ndarray,
    descriptor_rows: np.ndarray,
    baseline_rows: np.ndarray,
    norms: np.ndarray,
    offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Write the exact vectors (``source[descriptor_rows]``), the class baseline rows, the
    descriptor norms and the class offsets into ``tmp``, streamed from ``source`` in chunks,
    and return the vectors and baselines memory-mapped from the files written."""
    save_rows(tmp / VECTORS_FILE, source, descriptor_rows)
    save_rows(tmp / "class_baseline.npy", source, baseline_rows)
    np.save(tmp / "class_offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(tmp / "descriptor_norms.npy", np.asarray(norms, dtype=np.float32))
    return np.load(tmp / VECTORS_FILE, mmap_mode="r"), np.load(tmp / "class_baseline.npy", mmap_mode="r")


def write_index_files(tmp: Path, folder: Path, built: Built, manifest: dict[str, Any]) -> None:
    """Write the retrieval index's files and the manifest into ``tmp`` (which holds the
    vector files already), then rename it to ``folder``."""
    for stem, array in built.arrays.items():
        np.save(tmp / f"{stem}.npy", array)
    for name, blob in built.blobs.items():
        (tmp / name).write_bytes(blob)
    if built.faiss_index is not None:
        faiss.write_index(built.faiss_index, str(tmp / INDEX_FILE))
    (tmp / MANIFEST_FILE).write_text(json.dumps({"layout": LAYOUT, **manifest}, indent=2), encoding="utf-8")
    os.replace(tmp, folder)


def read_index_files(folder: Path, expected: dict[str, Any], params: dict[str, Any] | None = None) -> IndexFiles:
    """Load (memory-map) a version's files, refusing ones that belong to another database.
    ``expected`` holds ``store_id``, ``n_descriptors``, ``index_key`` and ``library_id``;
    a manifest is checked on the keys it has (layout 1 names the library id, 2 the key).
    ``params`` are the index parameters the database holds (re-tuned after an eval),
    else the manifest's (those of the build)."""
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
        raise StoreError(
            f"index files at {folder} have layout {layout}, newer than this whyclip reads: upgrade whyclip"
        )
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
        if not isinstance(index, faiss.IndexIDMap):  # layout 1 kept the descriptor keys in an IDMap
            raise StoreError(f"the index at {folder} has no descriptor keys: re-ingest the library")
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        if len(ids) > 1 and not np.all(np.diff(ids) > 0):
            raise StoreError(f"the index at {folder} is not in descriptor order: re-ingest the library")
        return IndexFiles(FaissSearch(index, ids), matrices, norms, vectors, {}, ids)
    matrices = ClassMatrices(
        class_sums(vectors, offsets, baseline), None, baseline, offsets, vectors=vectors, norms=norms
    )
    params = dict(manifest.get("index_params") or {}) if params is None else dict(params)
    partial = IndexFiles(FlatScan(vectors), matrices, norms, vectors, params, None, folder)
    searcher: FlatScan | ClassIVF | FaissSearch | PQRerank
    if factory == "Flat" or "exact_fallback" in params:
        searcher = FlatScan(vectors)
    else:
        searcher = approximate_searcher(partial, factory)
    return IndexFiles(searcher, matrices, norms, vectors, params, None, folder)


def approximate_searcher(files: IndexFiles, factory: str) -> ClassIVF | FaissSearch | PQRerank:
    """The approximate searcher of a version's files (the PQ index is read on first search)."""
    if is_pq_rerank(factory):
        return pq_searcher(files)
    if factory == "ClassIVF":  # its codes are derived from the class means, like at build time
        ivf = build_class_ivf(files.vectors, files.matrices.offsets, files.matrices.mean)
        ivf.probe = int(files.params["probe"])
        if codes_digest(ivf.codes) != files.params.get("codes_sha256"):
            log.warning(
                "class codes of %s differ from those measured at build: its recall may differ slightly", files.folder
            )
        return ivf
    return faiss_searcher(files)


def pq_searcher(files: IndexFiles) -> PQRerank:
    """A version's PQ re-rank searcher; its index file is read on first search."""
    folder = _version_folder(files)
    return PQRerank(
        files.vectors,
        np.load(folder / "pq_centre.npy"),
        int(files.params.get("depth", 1000)),
        path=folder / pqrerank.PQ_FILE,
        digest=files.params.get("pq_sha256"),
    )


def faiss_searcher(files: IndexFiles) -> FaissSearch:
    """A version's own FAISS index (memory-mapped), with its tuned search knob set."""
    folder = _version_folder(files)
    searcher = FaissSearch(faiss.read_index(str(folder / INDEX_FILE), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY))
    found = knob(searcher.index)
    if found is not None and found[0] in files.params:
        set_knob(searcher.index, found[0], int(files.params[found[0]]))
    return searcher


def _version_folder(files: IndexFiles) -> Path:
    if files.folder is None:
        raise StoreError("an approximate index is read from its library version's folder, and none was given")
    return files.folder
