"""Exact class scores by description: pure functions over numpy arrays.

Notation (DESIGN.md): ``img`` is a unit image vector, ``t(c, d)`` unit prompt vectors,
``s(c, d) = img . t(c, d)``. Descriptor rows are stored class-major: the descriptors of
class ``i`` are rows ``offsets[i]:offsets[i + 1]``. A class with no descriptors falls
back to its baseline prompt vector under every aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGGREGATES = ("mean", "centroid", "max")


@dataclass(frozen=True)
class ClassMatrices:
    """Everything exact scoring needs, precomputed at ingest.

    mean:     (C, d) ``mean_d t(c, d)`` (not renormalised), baseline row for empty classes
    centroid: (C, d) normalised mean of the *raw* prompt embeddings
    baseline: (C, d) unit vectors of the class-name prompts
    offsets:  (C + 1,) descriptor row offsets
    """

    mean: np.ndarray
    centroid: np.ndarray
    baseline: np.ndarray
    offsets: np.ndarray


def build_class_matrices(
    vectors: np.ndarray, norms: np.ndarray, offsets: np.ndarray, baseline: np.ndarray
) -> ClassMatrices:
    """Class-mean and centroid matrices from class-major unit ``vectors`` and raw ``norms``."""
    offsets = np.asarray(offsets, dtype=np.int64)
    counts = np.diff(offsets)
    n_classes, dim = baseline.shape
    mean = baseline.astype(np.float32, copy=True)
    centroid = baseline.astype(np.float32, copy=True)
    nonempty = np.flatnonzero(counts)
    if nonempty.size:
        starts = offsets[:-1][nonempty]
        vec64 = vectors.astype(np.float64)
        sums = np.add.reduceat(vec64, starts, axis=0)
        mean[nonempty] = (sums / counts[nonempty, None]).astype(np.float32)
        raw = np.add.reduceat(vec64 * norms.astype(np.float64)[:, None], starts, axis=0)
        raw /= np.linalg.norm(raw, axis=1, keepdims=True)
        centroid[nonempty] = raw.astype(np.float32)
    return ClassMatrices(mean=mean, centroid=centroid, baseline=baseline.astype(np.float32), offsets=offsets)


def score_classes(
    images: np.ndarray, m: ClassMatrices, aggregate: str, vectors: np.ndarray | None = None
) -> np.ndarray:
    """Exact scores of every class, shape (B, C), for unit image vectors of shape (B, d)."""
    images = np.atleast_2d(images).astype(np.float32)
    if aggregate == "mean":
        return images @ m.mean.T
    if aggregate == "centroid":
        return images @ m.centroid.T
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
    return e / e.sum(axis=-1, keepdims=True)


def descriptor_weights(
    aggregate: str, similarities: np.ndarray, unit: np.ndarray, norms: np.ndarray
) -> np.ndarray:
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
    if aggregate == "centroid":
        raw_sum = (unit.astype(np.float64) * norms.astype(np.float64)[:, None]).sum(axis=0)
        return norms.astype(np.float64) / np.linalg.norm(raw_sum)
    if aggregate == "max":
        best = similarities == similarities.max()
        return best / best.sum()
    raise ValueError(f"unknown aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
