"""Statistics for audits: intervals for accuracies and paired tests for comparisons made on
the same images. numpy and scipy only.

* **Wilson score interval** for a proportion (Wilson, 1927): the 95% interval of an
  accuracy of ``k`` correct out of ``n``.
* **McNemar's exact test** for two ways of scoring the same images: only the discordant
  images count (``b`` right by the first only, ``c`` by the second only); under the null
  hypothesis each is equally likely, so the two-sided p-value is a binomial test of
  ``min(b, c)`` out of ``b + c`` at 1/2.
* **Bootstrap over images** (percentile interval, seeded) for figures that are not
  proportions (a mean over random-word draws, a share), and the paired bootstrap for
  comparing such a figure with an accuracy on the same images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binom, norm

ALPHA = 0.05
Z95 = float(norm.ppf(1 - ALPHA / 2))
BOOTSTRAP = 2000  # resamples


def wilson(k: int, n: int, z: float = Z95) -> list[float]:
    """The Wilson score interval ``[low, high]`` of ``k`` successes out of ``n``."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def accuracy_figure(correct: np.ndarray) -> dict[str, Any]:
    """Top-1 (or any) accuracy of a boolean per-image array, with its Wilson interval."""
    correct = np.asarray(correct, dtype=bool)
    k, n = int(correct.sum()), len(correct)
    return {"accuracy": k / n if n else 0.0, "n": n, "ci95": wilson(k, n)}


def mcnemar_exact(first: np.ndarray, second: np.ndarray) -> dict[str, Any]:
    """McNemar's exact test of two boolean per-image correctness arrays (same images)."""
    first, second = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    if first.shape != second.shape:
        raise ValueError("a paired test needs the same images on both sides")
    b = int((first & ~second).sum())
    c = int((~first & second).sum())
    p = 1.0 if b + c == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5)))
    return {"only_first": b, "only_second": c, "p_value": p}


def verdict(p_value: float) -> str:
    return "significant" if p_value < ALPHA else "not significant"


def bootstrap_ci(values: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> list[float]:
    """Percentile 95% interval of the mean of per-image ``values``, resampling images."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return [0.0, 0.0]
    idx = np.random.default_rng(seed).integers(0, len(values), size=(reps, len(values)))
    means = values[idx].mean(axis=1)
    return [float(np.quantile(means, ALPHA / 2)), float(np.quantile(means, 1 - ALPHA / 2))]


def paired_bootstrap(first: np.ndarray, second: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> dict[str, Any]:
    """Mean per-image difference ``first - second`` (same images), its percentile 95%
    interval and a two-sided bootstrap p-value (twice the smaller tail at 0, at least
    ``1/reps``; 1 when every image agrees)."""
    diff = np.asarray(first, dtype=np.float64) - np.asarray(second, dtype=np.float64)
    if len(diff) == 0 or not diff.any():
        return {"difference": 0.0, "ci95": [0.0, 0.0], "p_value": 1.0}
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(reps, len(diff)))
    means = diff[idx].mean(axis=1)
    tail = min(np.mean(means <= 0), np.mean(means >= 0))
    return {
        "difference": float(diff.mean()),
        "ci95": [float(np.quantile(means, ALPHA / 2)), float(np.quantile(means, 1 - ALPHA / 2))],
        "p_value": float(min(1.0, max(2 * tail, 1 / reps))),
    }


def compare(name: str, descriptors: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    """The library's descriptors against another way of scoring the same images, by
    McNemar's exact test. ``accuracy`` and ``ci95`` are the other way's (the section's own
    figure); a sentence says "not significant" when the difference is not."""
    a, b = accuracy_figure(descriptors), accuracy_figure(other)
    test = mcnemar_exact(descriptors, other)
    diff = a["accuracy"] - b["accuracy"]
    sig = verdict(test["p_value"])
    sentence = (
        f"descriptors {100 * a['accuracy']:.1f}% vs {name} {100 * b['accuracy']:.1f}% top-1 "
        f"({100 * diff:+.1f} points, McNemar p = {test['p_value']:.3g}, {sig})"
    )
    return {
        "against": name,
        "accuracy": b["accuracy"],
        "ci95": b["ci95"],
        "descriptors_accuracy": a["accuracy"],
        "descriptors_ci95": a["ci95"],
        "difference": diff,
        "n": a["n"],
        "only_descriptors": test["only_first"],
        "only_other": test["only_second"],
        "p_value": test["p_value"],
        "significant": sig == "significant",
        "statement": sentence,
    }
