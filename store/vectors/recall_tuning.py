"""Calibrating approximate retrieval on queries shaped like the ones it answers: images.

An approximate index's knob (the PQ re-rank depth, a FAISS IVF's ``nprobe``, an HNSW
graph's ``efSearch``) is set to the smallest value whose recall@10 against exact search
reaches :data:`RECALL_TARGET` (plus :data:`MARGIN`) on half of the tuning queries; the recall reported is
measured on the other half. When no value reaches the target, or the approximate search is
not faster than the exact scan it stands in for (both timed here, one query at a time), the
library answers by the exact scan instead, and says why.

The queries, best first:

* **eval images**: the stored image vectors of the library's evaluation runs (any version
  of the library with the same encoder), when there are at least :data:`MIN_EVAL_IMAGES`;
  ``whyclip eval`` re-tunes the version it ran on.
* **a proxy** otherwise (:func:`proxy_queries`): for a seeded sample of classes, the
  direction of the class's mean descriptor vector from the mean of all descriptor vectors,
  mixed with an equal-norm random direction so that the query keeps only a cosine of
  :data:`PROXY_COSINE` with it. An inner-product ranking ignores what a query adds along
  the text cone's axis, so what an image query differs in is how little of its direction,
  seen from the text cone's centre, it shares with its class: CLIP images match their
  class's text at a cosine of about 0.3 where two texts of one class match at about 0.8.
  The range (0.15-0.4, drawn per query) was chosen on CLIP-shaped data
  (:mod:`bench.synthetic`, 100k descriptors, PQ256x4fs): its recall@10 is at
  or below the image queries' at every re-rank depth (0.93 vs 0.97 at 50, 0.98 vs 0.98 at
  100, 0.99 vs 1.00 at 200), so the depth it picks errs deep; 0.25-0.5 was too easy (0.99 at
  50). It models CLIP's geometry, not a particular image set, so eval images replace it
  whenever there are any.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import faiss
import numpy as np

from whyclip.store.vectors.pqrerank import PQRerank, rerank
from whyclip.store.vectors.search import exact_search

RECALL_TARGET = 0.95
MARGIN = 0.01  # the knob is set to reach target + margin on the fitting half, so the held-out half reaches the target
PROXY_QUERIES = 400
PROXY_COSINE = (0.15, 0.4)  # drawn per query: the share of its class's direction an image query keeps
MIN_EVAL_IMAGES = 20
DEPTHS = (50, 100, 150, 200, 300, 400, 600, 800, 1000, 1500, 2000, 3000, 4000, 6000, 8000)
MAX_DEPTH_SHARE = 0.25  # re-ranking more than this share of the library is the exact scan's work
TIMED = 7  # one-query searches timed per method (their median is compared)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
EF_SEARCHES = (16, 32, 64, 128, 256, 512, 1024, 2048)


class FaissSearcher(Protocol):
    """What :func:`tune_faiss` uses of :class:`whyclip.store.vectors.retrieval.FaissSearch`
    (named by this protocol: retrieval imports this module)."""

    index: faiss.Index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(frozen=True)
class Queries:
    """Calibration queries (unit rows) and where they come from."""

    vectors: np.ndarray
    source: str  # "eval images" or "proxy"
    label: str  # e.g. "240 eval images" or "400 proxy image queries"


def proxy_queries(
    vectors: np.ndarray,
    offsets: np.ndarray,
    n: int = PROXY_QUERIES,
    seed: int = 0,
    cosine: float | tuple[float, float] = PROXY_COSINE,
) -> Queries:
    """Image-like queries built from the library alone (see the module docstring)."""
    rng = np.random.default_rng(seed)
    sizes = np.diff(offsets)
    coded = np.flatnonzero(sizes)
    if not len(coded):
        return Queries(np.zeros((0, vectors.shape[1]), np.float32), "proxy", "no queries")
    centre = np.zeros(vectors.shape[1])
    for lo in range(0, len(vectors), 1 << 16):
        centre += np.asarray(vectors[lo : lo + (1 << 16)], dtype=np.float64).sum(axis=0)
    centre /= len(vectors)
    picks = rng.choice(coded, size=n, replace=len(coded) < n)  # a class twice: other noise
    own = np.stack([np.asarray(vectors[offsets[c] : offsets[c + 1]]).mean(axis=0) - centre for c in picks])
    own /= np.maximum(np.linalg.norm(own, axis=1, keepdims=True), 1e-12)
    noise = rng.standard_normal(own.shape)
    noise -= np.sum(noise * own, axis=1, keepdims=True) * own
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = rng.uniform(*cosine, size=(len(picks), 1)) if isinstance(cosine, tuple) else np.full((len(picks), 1), cosine)
    q = cos * own + np.sqrt(1 - cos**2) * noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return Queries(q.astype(np.float32), "proxy", f"{len(q)} proxy image queries")


def eval_queries(vectors: np.ndarray) -> Queries | None:
    """The eval images' vectors as tuning queries, when there are enough of them."""
    if len(vectors) < MIN_EVAL_IMAGES:
        return None
    return Queries(np.ascontiguousarray(vectors, dtype=np.float32), "eval images", f"{len(vectors)} eval images")


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """The share of the exact top-k positions that were found (-1: nothing found)."""
    if exact.size == 0:
        return 1.0
    hits = sum(len(set(e.tolist()) & set(f.tolist())) for e, f in zip(exact, found, strict=True))
    return hits / exact.size


def median_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray) -> float:
    """Median milliseconds of ``fn`` on one query at a time (after one warm-up)."""
    fn(queries[:1])
    times = []
    for q in queries[:TIMED]:
        t = time.perf_counter()
        fn(q[None])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def tune_depth(
    searcher: PQRerank,
    vectors: np.ndarray,
    queries: Queries,
    k: int = 10,
    target: float = RECALL_TARGET,
    exact_ms: float | None = None,
) -> dict[str, Any]:
    """The re-rank depth of a :class:`~whyclip.store.vectors.pqrerank.PQRerank`, or the
    reason to answer exactly instead (``exact_fallback``)."""

    n = len(vectors)
    q = queries.vectors
    fit, held = q[0::2], q[1::2]
    _, exact = exact_search(vectors, q, k)
    fit_exact, held_exact = exact[0::2], exact[1::2]
    depths = [d for d in DEPTHS if d <= max(k, MAX_DEPTH_SHARE * n)] or [k]
    cand = searcher.candidates(q, depths[-1])
    fit_cand, held_cand = cand[0::2], cand[1::2]
    curve, chosen = {}, None
    for d in depths:
        got = recall(rerank(vectors, fit, fit_cand[:, :d], k)[1], fit_exact)
        curve[d] = round(got, 4)
        if got >= target + MARGIN:
            chosen = d
            break
    params = {
        "recall_target": target,
        "calibrated_on": queries.label,
        "query_source": queries.source,
        "recall_by_depth": {str(d): r for d, r in curve.items()},
    }
    depth = chosen or depths[-1]
    params["depth"] = depth
    params["recall_at_10"] = recall(rerank(vectors, held, held_cand[:, :depth], k)[1], held_exact)
    approx_ms = median_ms(lambda x: searcher.search(x, k, depth), q)
    exact_ms = exact_ms if exact_ms is not None else median_ms(lambda x: exact_search(vectors, x, k), q)
    params.update(approx_ms=round(approx_ms, 3), exact_ms=round(exact_ms, 3))
    if chosen is None:
        params["exact_fallback"] = (
            f"recall@{k} {max(curve.values()):.3f} < {target} at every re-rank depth up to {depth}"
        )
    elif approx_ms >= exact_ms:
        params["exact_fallback"] = f"not faster than the exact scan ({approx_ms:.2f} ms vs {exact_ms:.2f} ms a query)"
    return params


def knob(index: faiss.Index) -> tuple[str, tuple[int, ...]] | None:
    """The search-time parameter of a user's FAISS index that trades recall for time."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else faiss.downcast_index(index)
    if isinstance(inner, faiss.IndexPreTransform):
        inner = faiss.downcast_index(inner.index)
    if isinstance(inner, faiss.IndexIVF):
        return "nprobe", tuple(p for p in NPROBES if p <= inner.nlist) or (1,)
    if isinstance(inner, faiss.IndexHNSW):
        return "efSearch", EF_SEARCHES
    return None


def set_knob(index: faiss.Index, name: str, value: int) -> None:
    faiss.ParameterSpace().set_index_parameter(index, name, value)


def tune_faiss(
    searcher: FaissSearcher, vectors: np.ndarray, queries: Queries, k: int = 10, target: float = RECALL_TARGET
) -> dict[str, Any]:
    """The smallest ``nprobe`` / ``efSearch`` of a user's FAISS index reaching ``target``
    on half the queries (its recall measured on the other half), or its recall alone for
    an index with no such knob; ``exact_fallback`` when it is not faster than the exact
    scan, else ``warning`` when the recall stays below ``target``."""

    q = queries.vectors
    fit, held = q[0::2], q[1::2]
    _, exact = exact_search(vectors, q, k)
    params: dict[str, Any] = {"recall_target": target, "calibrated_on": queries.label, "query_source": queries.source}
    found = knob(searcher.index)
    if found is not None:
        name, values = found
        curve = {}
        for v in values:
            set_knob(searcher.index, name, v)
            curve[v] = round(recall(searcher.search(fit, k)[1], exact[0::2]), 4)
            if curve[v] >= target + MARGIN:
                break
        params[name] = v
        params[f"recall_by_{name}"] = {str(a): b for a, b in curve.items()}
    params["recall_at_10"] = recall(searcher.search(held, k)[1], exact[1::2])
    approx_ms = median_ms(lambda x: searcher.search(x, k), q)
    exact_ms = median_ms(lambda x: exact_search(vectors, x, k), q)
    params.update(approx_ms=round(approx_ms, 3), exact_ms=round(exact_ms, 3))
    if approx_ms >= exact_ms:
        params["exact_fallback"] = f"not faster than the exact scan ({approx_ms:.2f} ms vs {exact_ms:.2f} ms a query)"
    elif params["recall_at_10"] < target:
        params["warning"] = (
            f"recall@{k} {params['recall_at_10']:.3f} on {queries.label} is below {target}"
            + (f" even at {found[0]} {params[found[0]]}" if found else "")
            + ": its library-wide hits miss many of the exact ones; consider the default index"
        )
    return params
