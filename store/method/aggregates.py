"""Exact class scores by description: pure functions over numpy arrays.

Notation (docs/method.md): ``img`` is a unit image vector, ``t(c, d)`` unit prompt vectors,
``s(c, d) = img . t(c, d)``. Descriptor rows are stored class-major: the descriptors of
class ``i`` are rows ``offsets[i]:offsets[i + 1]``. A class with no descriptors falls
back to its baseline prompt vector under every aggregate.
"""

from __future__ import annotations

import numpy as np

from whyclip.store.choices import AGGREGATES

CHUNK_ROWS = 1 << 15  # descriptor rows summed at a time (float64: 128 MB at dim 512)


class ClassMatrices:
    """Everything exact scoring needs, per class.

    mean:     (C, d) ``mean_d t(c, d)`` (not renormalised), baseline row for empty classes;
              derived from the vectors on first use when not given (the writer needs it
              only for the class inverted file)
    centroid: (C, d) normalised mean of the *raw* prompt embeddings; derived from the
              vectors and norms on first use when not given (only that aggregate needs it)
    baseline: (C, d) unit vectors of the class-name prompts
    offsets:  (C + 1,) descriptor row offsets
    """

    def __init__(
        self,
        mean: np.ndarray | None,
        centroid: np.ndarray | None,
        baseline: np.ndarray,
        offsets: np.ndarray,
        *,
        vectors: np.ndarray | None = None,
        norms: np.ndarray | None = None,
    ):
        self._mean = mean
        self.baseline = baseline
        self.offsets = offsets
        self._centroid = centroid
        self._source = (vectors, norms)

    @property
    def mean(self) -> np.ndarray:
        if self._mean is None:
            vectors, _ = self._source
            if vectors is None:
                raise ValueError("the class means need the descriptor vectors")
            self._mean = class_sums(vectors, self.offsets, self.baseline)
        return self._mean

    @property
    def centroid(self) -> np.ndarray:
        if self._centroid is None:
            vectors, norms = self._source
            if vectors is None or norms is None:
                raise ValueError("the centroid aggregate needs the descriptor vectors and norms")
            self._centroid = class_sums(vectors, self.offsets, self.baseline, norms=norms, normalise=True)
        return self._centroid


def class_sums(
    vectors: np.ndarray,
    offsets: np.ndarray,
    baseline: np.ndarray,
    *,
    norms: np.ndarray | None = None,
    normalise: bool = False,
) -> np.ndarray:
    """Per class, the float64 sum of its rows of ``vectors`` (times ``norms`` when given),
    then divided by the count (mean) or normalised (``normalise``), as float32; empty
    classes get their baseline row. Summed in class-aligned chunks, so a memory-mapped
    million-row matrix is never copied whole."""
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    out = np.array(baseline, dtype=np.float32, copy=True)
    nonempty = np.flatnonzero(counts)
    start = 0
    while start < len(nonempty):
        first = offsets[nonempty[start]]
        stop = int(np.searchsorted(offsets[nonempty], first + CHUNK_ROWS, side="left"))
        stop = max(stop, start + 1)
        cls = nonempty[start:stop]
        lo, hi = int(offsets[cls[0]]), int(offsets[cls[-1] + 1])
        rows = np.asarray(vectors[lo:hi], dtype=np.float32)
        weights = None if norms is None else np.asarray(norms[lo:hi], dtype=np.float64)
        # Classes of equal size at once, as a (classes, size, dim) gather summed in float64:
        # np.add.reduceat over axis 0 measured 4x slower.
        sizes = counts[cls]
        sums = np.empty((len(cls), rows.shape[1]), dtype=np.float64)
        for size in np.unique(sizes):
            same = np.flatnonzero(sizes == size)
            at = (offsets[cls[same]] - lo)[:, None] + np.arange(size)
            block = rows[at] if weights is None else rows[at] * weights[at][..., None]
            sums[same] = block.sum(axis=1, dtype=np.float64)
        if normalise:
            sums /= np.linalg.norm(sums, axis=1, keepdims=True)
        else:
            sums /= counts[cls, None]
        out[cls] = sums.astype(np.float32)
        start = stop
    return out


def build_class_matrices(
    vectors: np.ndarray, norms: np.ndarray, offsets: np.ndarray, baseline: np.ndarray
) -> ClassMatrices:
    """Class-mean matrix from class-major unit ``vectors``; the centroid matrix (which needs
    the raw ``norms``) is derived on first use."""
    offsets = np.asarray(offsets, dtype=np.int64)
    baseline = np.asarray(baseline, dtype=np.float32)
    mean = class_sums(vectors, offsets, baseline)
    return ClassMatrices(mean, None, baseline, offsets, vectors=vectors, norms=norms)


def score_classes(
    images: np.ndarray, m: ClassMatrices, aggregate: str, vectors: np.ndarray | None = None
) -> np.ndarray:
    """Exact scores of every class, shape (B, C), for unit image vectors of shape (B, d)."""
    images = np.atleast_2d(images).astype(np.float32)
    scores: np.ndarray
    if aggregate == "mean":
        scores = images @ m.mean.T
        return scores
    if aggregate == "centroid":
        scores = images @ m.centroid.T
        return scores
    if aggregate == "max":
        if vectors is None:
            raise ValueError("the max aggregate needs the descriptor vectors")
        scores = images @ m.baseline.T
        counts = np.diff(m.offsets)
        nonempty = np.flatnonzero(counts)
        if nonempty.size:
            sims = images @ vectors.T
            scores[:, nonempty] = np.maximum.reduceat(sims, m.offsets[:-1][nonempty], axis=1)
        return scores
    raise ValueError(f"unknown aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties keep index order (as a stable sort
    of all of them would), without sorting all of them."""
    k = min(k, len(scores))
    if k >= len(scores):
        return np.argsort(-scores, kind="stable")
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]  # the k-th largest value
    candidates = np.flatnonzero(scores >= kth)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k]


def softmax(scores: np.ndarray, logit_scale: float) -> np.ndarray:
    """``softmax(logit_scale * scores)`` along the last axis, computed stably in float64."""
    z = np.asarray(scores, dtype=np.float64) * logit_scale
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def calibrated_softmax(
    scores: np.ndarray, logit_scale: float, temperature: float, biases: np.ndarray | None = None
) -> np.ndarray:
    """``softmax(logit_scale * scores / temperature + biases)`` along the last axis: the
    probabilities of a stored calibration (``whyclip calibrate``)."""
    z = np.asarray(scores, dtype=np.float64) * (logit_scale / temperature)
    if biases is not None:
        z = z + np.asarray(biases, dtype=np.float64)
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return probs


def descriptor_weights(aggregate: str, similarities: np.ndarray, unit: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Weights ``w`` with ``score = sum_d w_d s_d`` for one class's descriptors.

    mean: ``1/n``; centroid: ``norm_d / ||sum_e norm_e t_e||``; max: 1 on the best
    descriptor (ties split), 0 elsewhere. The contrast of two classes uses them to split a
    score difference into per-descriptor contributions that add up exactly.
    """
    n = len(similarities)
    if n == 0:
        return np.zeros(0)
    if aggregate == "mean":
        return np.full(n, 1.0 / n)
    weights: np.ndarray
    if aggregate == "centroid":
        raw_sum = (unit.astype(np.float64) * norms.astype(np.float64)[:, None]).sum(axis=0)
        weights = norms.astype(np.float64) / np.linalg.norm(raw_sum)
        return weights
    if aggregate == "max":
        best = similarities == similarities.max()
        weights = best / best.sum()
        return weights
    raise ValueError(f"unknown aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
