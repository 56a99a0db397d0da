"""Audit a stored evaluation run: accuracy with intervals, what drives predictions,
descriptor hygiene and controls (the paired comparisons live in :mod:`.controls`,
the statistics in :mod:`.stats`). Pure numpy and scipy over the run's image vectors and the
library; no model.

Definitions (``s_d`` an image's similarity to descriptor ``d``, ``w_d`` its weight in its
class's score, docs/method.md):

* **top contributor** of a predicted class: its descriptor with the largest ``s_d``.
* **margin contribution** against class ``b``: the exact split of ``score(a) - score(b)``
  that ``Library.contrast`` uses, ``w_d (s_d - mu / W_a)`` with ``mu`` the mean of the two
  scores; the rows of both classes add up to the margin. A descriptor of ``a`` that matches
  less than ``a``'s share of the midpoint counts towards ``b``, and one of ``b`` that
  matches more counts towards ``b``: a confused pair lists both kinds, with their class.
* **flat** descriptor: the standard deviation of its similarity over the run's images is
  below ``flat_ratio`` times the median over all descriptors (it cannot tell images apart).
* **deletion**: the predicted class is rescored without its ``k`` most similar descriptors
  (the explanation's top ``k``), against ``k`` chosen at random; other classes keep their
  scores, so the prediction can only move to the runner-up. It measures how much the top
  descriptors carry; it is no test of faithfulness (for mean and max, removing the most
  similar descriptors costs at least as much as removing any others, by arithmetic).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from whyclip.store.analysis import controls
from whyclip.store.analysis.calibration import audit_section
from whyclip.store.analysis.run_records import BARE, BASELINE, CONTROL, FUDD, SWAP, WORDS, RunData
from whyclip.store.analysis.stats import mcnemar_exact, verdict, wilson
from whyclip.store.method import AGGREGATES, descriptor_weights

if TYPE_CHECKING:  # a loaded version is passed in; nothing here reads the database itself
    from whyclip.store.db.calibrations import CalibrationInfo
    from whyclip.store.library import Library

NEAR_MAX = 50_000  # descriptors; the near-duplicate check compares every pair
FLAT_SAMPLE = 2_000  # images used for each descriptor's similarity spread
BLOCK = 2048


@dataclass(frozen=True)
class AuditSettings:
    aggregate: str | None = None  # default: the library's
    delete_k: int = 3
    random_draws: int = 5
    pairs: int = 10  # confused pairs listed, with their evidence
    evidence: int = 5  # descriptor rows per side of a confused pair
    near_threshold: float = 0.95
    flat_ratio: float = 0.25
    min_n: int = 10  # images a class needs before it is flagged
    seed: int = 0


def method_label(method: str, details: dict[str, Any] | None = None) -> str:
    if method == BASELINE:
        return "baseline (class name)"
    if method == FUDD:
        f = (details or {}).get("fudd", {})
        return f"FuDD pair descriptors (top-{f['top_k']} of {f['base']} re-ranked)" if f else "FuDD pair descriptors"
    agg = method.rsplit(":", 1)[-1]
    for prefix, label in (
        (CONTROL, "shuffled descriptor words"),
        (BARE, "descriptors without the class name"),
        (SWAP, "swapped descriptors"),
    ):
        if method.startswith(prefix):
            return f"{label} ({agg})"
    if method.startswith(WORDS):
        return f"random words, draw {method[len(WORDS) :].split(':')[0]} ({agg})"
    return f"descriptors ({method})"


def _order(method: str) -> tuple[int, int, int, str]:
    """Aggregates, the baseline, FuDD, shuffled words, bare, swap, then the random-word draws."""
    kinds = ("", BASELINE, FUDD, CONTROL, BARE, SWAP, WORDS)
    kind = next((i for i, k in enumerate(kinds[1:], 1) if method.startswith(k)), 0)
    agg = method.rsplit(":", 1)[-1]
    draw = int(method[len(WORDS) :].split(":")[0]) if kinds[kind] == WORDS else 0
    return kind, draw, AGGREGATES.index(agg) if agg in AGGREGATES else 0, method


def accuracy(run: RunData) -> list[dict[str, Any]]:
    """Top-1 and top-5 of every stored way of scoring, with the Wilson 95% interval of top-1
    (``ci95``) and of top-5 (``top5_ci95``)."""
    out = []
    for method in sorted(run.results, key=_order):
        r = run.results[method]
        n = len(r.true_rank)
        if n == 0:
            continue
        k1, k5 = int(np.sum(r.true_rank == 1)), int(np.sum(r.true_rank <= 5))
        out.append(
            {
                "method": method,
                "label": method_label(method, run.info.details),
                "n": n,
                "top1": k1 / n,
                "top5": k5 / n,
                "ci95": wilson(k1, n),
                "top5_ci95": wilson(k5, n),
            }
        )
    return out


def per_class(run: RunData, lib: Library, agg: str, min_n: int = 10) -> list[dict[str, Any]]:
    """Top-1 accuracy of every class that has images (descriptors, baseline, shuffled words),
    with its n, Wilson intervals and McNemar's p against the baseline; ``flagged`` when the
    descriptors do worse than the class name on at least ``min_n`` images."""
    out = []
    for c in np.unique(run.labels):
        mask = run.labels == c
        n = int(mask.sum())
        mine, base = run.results[agg].true_rank[mask] == 1, run.results[BASELINE].true_rank[mask] == 1
        p = mcnemar_exact(mine, base)["p_value"]
        row = {
            "class": lib.class_names[c],
            "n": n,
            "top1": float(mine.mean()),
            "ci95": wilson(int(mine.sum()), n),
            "baseline_top1": float(base.mean()),
            "baseline_ci95": wilson(int(base.sum()), n),
            "p_value": p,
            "significant": verdict(p) == "significant",
            "flagged": bool(n >= min_n and mine.mean() < base.mean()),
        }
        if CONTROL + agg in run.results:
            row["control_top1"] = float(np.mean(run.results[CONTROL + agg].true_rank[mask] == 1))
        out.append(row)
    return out


def _class_sims(lib: Library, image: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = lib.matrices.offsets[c], lib.matrices.offsets[c + 1]
    unit = np.asarray(lib.vectors[lo:hi])
    return unit @ image, unit


def _weights(lib: Library, agg: str, c: int, sims: np.ndarray, unit: np.ndarray) -> np.ndarray:
    lo, hi = lib.matrices.offsets[c], lib.matrices.offsets[c + 1]
    return descriptor_weights(agg, sims, unit, np.asarray(lib.files.norms[lo:hi]))


def confusions(run: RunData, lib: Library, agg: str, s: AuditSettings) -> list[dict[str, Any]]:
    """The most frequent (predicted, true) pairs, each with the descriptors that pulled
    towards the predicted class and those that supported the true one (mean contribution
    to ``score(predicted) - score(true)`` over the pair's images)."""
    res = run.results[agg]
    pred = res.predicted
    wrong = np.flatnonzero(pred != run.labels)
    counts = Counter((int(pred[i]), int(run.labels[i])) for i in wrong)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: s.pairs]
    out = []
    for (a, b), n in ranked:
        sums: dict[str, float] = defaultdict(float)
        owner: dict[str, str] = {}
        na, nb = lib.class_names[a], lib.class_names[b]
        for i in wrong[(pred[wrong] == a) & (run.labels[wrong] == b)]:
            scores = {a: float(res.top_scores[i, 0]), b: float(res.true_score[i])}  # contrast reads only these two
            for r in lib.contrast(run.vectors[i], a, b, agg, scores).rows:
                sums[r.descriptor] += r.contribution
                owner[r.descriptor] = r.of
        rows = sorted(((t, v / n) for t, v in sums.items()), key=lambda tv: -tv[1])
        out.append(
            {
                "predicted": na,
                "true": nb,
                "count": n,
                "towards_predicted": [{"text": t, "class": owner[t], "contribution": v} for t, v in rows if v > 0][
                    : s.evidence
                ],
                "towards_true": [{"text": t, "class": owner[t], "contribution": v} for t, v in reversed(rows) if v < 0][
                    : s.evidence
                ],
            }
        )
    return out


def drivers(run: RunData, lib: Library, agg: str) -> list[dict[str, Any]]:
    """Per descriptor of a predicted class: how often it was its class's top contributor
    (correct / wrong predictions) and its mean margin contribution against the runner-up."""
    res = run.results[agg]
    offsets = lib.matrices.offsets
    n_rows = int(offsets[-1])
    n_pred = np.zeros(n_rows, np.int64)
    top_ok = np.zeros(n_rows, np.int64)
    top_bad = np.zeros(n_rows, np.int64)
    margin = np.zeros(n_rows, np.float64)
    for i, image in enumerate(run.vectors):
        a = int(res.top[i, 0])
        lo, hi = offsets[a], offsets[a + 1]
        if hi == lo:
            continue
        sims, unit = _class_sims(lib, image, a)
        n_pred[lo:hi] += 1
        best = lo + int(np.argmax(sims))
        (top_ok if a == run.labels[i] else top_bad)[best] += 1
        if res.top.shape[1] > 1:
            w = _weights(lib, agg, a, sims, unit)
            mu = (res.top_scores[i, 0] + res.top_scores[i, 1]) / 2
            margin[lo:hi] += w * (sims - mu / w.sum())
    out = []
    for c in np.unique(res.predicted):
        lo, hi = offsets[c], offsets[c + 1]
        for j, (text, _prompt) in enumerate(lib.class_texts(int(c))):
            d = lo + j
            out.append(
                {
                    "class": lib.class_names[c],
                    "text": text,
                    "predicted": int(n_pred[d]),
                    "top_correct": int(top_ok[d]),
                    "top_wrong": int(top_bad[d]),
                    "mean_margin": float(margin[d] / n_pred[d]) if n_pred[d] else 0.0,
                }
            )
    out.sort(key=lambda r: (-(r["top_correct"] + r["top_wrong"]), -r["mean_margin"], r["class"], r["text"]))
    return out


def _row_classes(lib: Library) -> np.ndarray:
    return np.repeat(np.arange(len(lib.class_names)), np.diff(lib.matrices.offsets))


def _row_texts(lib: Library) -> list[str]:
    return [t for c in range(len(lib.class_names)) for t, _ in lib.class_texts(c)]


def near_identical(lib: Library, threshold: float, texts: list[str]) -> tuple[list[dict[str, Any]], str | None]:
    """Pairs of prompts of *different* classes and different texts whose vectors have a
    cosine of at least ``threshold`` (the same text in several classes is listed as shared)."""
    n = int(lib.matrices.offsets[-1])
    if n > NEAR_MAX:
        return (
            [],
            f"near-identical prompts not checked: {n:,} descriptors is over {NEAR_MAX:,} (every pair is compared)",
        )
    vec = np.asarray(lib.vectors, dtype=np.float32)
    cls = _row_classes(lib)
    out = []
    rows = max(1, min(BLOCK, (1 << 24) // max(n, 1)))  # at most 16M similarities (64 MB) at a time
    for start in range(0, n, rows):
        block = vec[start : start + rows] @ vec.T
        for i, j in zip(*np.nonzero(block >= threshold), strict=True):
            gi = start + int(i)
            if j <= gi or cls[gi] == cls[j] or texts[gi] == texts[j]:
                continue
            out.append(
                {
                    "class_a": lib.class_names[cls[gi]],
                    "text_a": texts[gi],
                    "class_b": lib.class_names[cls[j]],
                    "text_b": texts[j],
                    "cosine": float(block[i, j]),
                }
            )
    out.sort(key=lambda r: (-r["cosine"], r["class_a"], r["text_a"]))
    return out, None


def flat_descriptors(
    run: RunData, lib: Library, ratio: float, texts: list[str], seed: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Descriptors whose similarity barely varies over the run's images."""
    n = int(lib.matrices.offsets[-1])
    if len(run.vectors) < 2 or n == 0:
        return [], {"note": "needs at least two images and one descriptor"}
    images = run.vectors
    if len(images) > FLAT_SAMPLE:
        images = images[np.sort(np.random.default_rng(seed).choice(len(images), FLAT_SAMPLE, replace=False))]
    std = np.empty(n, np.float64)
    mean = np.empty(n, np.float64)
    for start in range(0, n, BLOCK):
        sims = images @ np.asarray(lib.vectors[start : start + BLOCK]).T
        std[start : start + sims.shape[1]] = sims.std(axis=0)
        mean[start : start + sims.shape[1]] = sims.mean(axis=0)
    median = float(np.median(std))
    cls = _row_classes(lib)
    flat = np.flatnonzero(std < ratio * median)
    rows = [
        {"class": lib.class_names[cls[d]], "text": texts[d], "std": float(std[d]), "mean": float(mean[d])}
        for d in flat[np.argsort(std[flat], kind="stable")]
    ]
    return rows, {"median_std": median, "threshold": ratio * median, "images": len(images)}


def _rescore(agg: str, sims: np.ndarray, keep: np.ndarray, unit: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Class scores from only the kept descriptors: ``sims`` and ``keep`` are (..., n)."""
    out: np.ndarray
    if agg == "mean":
        out = (sims * keep).sum(axis=-1) / keep.sum(axis=-1)
    elif agg == "max":
        out = np.where(keep, sims, -np.inf).max(axis=-1)
    else:
        weighted = keep * norms.astype(np.float64)  # centroid: the normalised sum of the kept raw vectors
        raw = weighted @ unit.astype(np.float64)
        out = (weighted * sims).sum(axis=-1) / np.linalg.norm(raw, axis=-1)
    return out


# (aggregate, sims, unit, norms, predicted class a, rival, rival score, old score, true class) of one class's images
_Case = tuple[str, np.ndarray, np.ndarray, np.ndarray, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _outcome(case: _Case, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Score drops of the predicted class ``a`` keeping only ``keep``, and whether the
    prediction (``a``, or its rival if ``a`` now scores lower) is then correct."""
    agg, sims, unit, norms, a, rival, rival_score, old, truth = case
    new = _rescore(agg, sims if keep.ndim == 2 else sims[None], keep, unit, norms)
    winner = np.where((new > rival_score) | ((new == rival_score) & (a < rival)), a, rival)
    return old - new, winner == truth


def random_keep_masks(rng: np.random.Generator, draws: int, rows: int, n: int, k: int) -> np.ndarray:
    """(draws, rows, n) masks keeping all but exactly ``k`` descriptors, chosen uniformly at
    random per row and draw (the ``k`` smallest of random keys are dropped, by rank)."""
    ranks = np.argsort(np.argsort(rng.random((draws, rows, n)), axis=2), axis=2)
    return ranks >= k


def deletion(run: RunData, lib: Library, agg: str, k: int, draws: int, seed: int) -> dict[str, Any]:
    """Remove the predicted class's top-``k`` descriptors (or ``k`` random ones, ``draws``
    times) and rescore it; every other class keeps its score, so the prediction either stays
    or moves to the runner-up. Images are handled a predicted class at a time."""
    res = run.results[agg]
    offsets = lib.matrices.offsets
    rng = np.random.default_rng(seed)
    pred = res.predicted
    if res.top.shape[1] < 2:
        return {"k": k, "images": 0, "skipped": len(pred), "note": "the library has a single class"}
    used = np.flatnonzero(np.diff(offsets)[pred] > k)
    if not len(used):
        return {
            "k": k,
            "images": 0,
            "skipped": len(pred),
            "note": f"no predicted class has more than {k} descriptors: lower --delete-k",
        }
    drop_top = np.empty(len(used))
    drop_rand = np.empty(len(used))
    ok_top = np.empty(len(used), bool)
    ok_rand = np.empty(len(used))
    rival, rival_score = res.top[used, 1], res.top_scores[used, 1]
    old = res.top_scores[used, 0]
    for a in np.unique(pred[used]):
        rows = np.flatnonzero(pred[used] == a)
        lo, hi = offsets[a], offsets[a + 1]
        n = hi - lo
        unit = np.asarray(lib.vectors[lo:hi])
        norms = np.asarray(lib.files.norms[lo:hi])
        sims = run.vectors[used[rows]].astype(np.float64) @ unit.T.astype(np.float64)  # (m, n)
        case = (agg, sims, unit, norms, int(a), rival[rows], rival_score[rows], old[rows], run.labels[used[rows]])
        top = np.ones_like(sims, dtype=bool)
        np.put_along_axis(top, np.argsort(-sims, axis=1, kind="stable")[:, :k], False, axis=1)
        drop_top[rows], ok_top[rows] = _outcome(case, top)
        random_keep = random_keep_masks(rng, draws, len(rows), n, k)
        d, ok = _outcome(case, random_keep)
        drop_rand[rows], ok_rand[rows] = d.mean(axis=0), ok.mean(axis=0)
    before = pred[used] == run.labels[used]
    p = mcnemar_exact(before, ok_top)["p_value"]
    return {
        "measures": f"how much the explanation's top {k} descriptors carry",
        "k": k,
        "draws": draws,
        "images": len(used),
        "skipped": len(pred) - len(used),
        "accuracy_before": float(np.mean(before)),
        "accuracy_before_ci95": wilson(int(before.sum()), len(used)),
        "accuracy_top_removed": float(np.mean(ok_top)),
        "ci95": wilson(int(ok_top.sum()), len(used)),
        "accuracy_random_removed": float(np.mean(ok_rand)),
        "score_drop_top": float(np.mean(drop_top)),
        "score_drop_random": float(np.mean(drop_rand)),
        "p_value": p,
        "significant": verdict(p) == "significant",
    }


def audit(
    run: RunData, lib: Library, settings: AuditSettings | None = None, calibration: CalibrationInfo | None = None
) -> dict[str, Any]:
    """Everything a report shows, as plain data (the JSON format of ``whyclip audit``).
    ``calibration``: the library version's stored calibration, if any
    (:func:`whyclip.store.db.calibrations.latest_calibration`)."""
    s = settings or AuditSettings()
    agg = s.aggregate or lib.info.aggregate
    texts = _row_texts(lib)
    acc = accuracy(run)
    classes = per_class(run, lib, agg, s.min_n)
    near, near_note = near_identical(lib, s.near_threshold, texts)
    flat, flat_stats = flat_descriptors(run, lib, s.flat_ratio, texts, s.seed)
    notes = [near_note] if near_note else []
    return {
        "run": run.info.to_dict(),
        "library": {
            "name": lib.info.name,
            "version": lib.info.version,
            "classes": len(lib.class_names),
            "descriptors": int(lib.matrices.offsets[-1]),
            "encoder": lib.info.encoder_name,
            "logit_scale": lib.info.logit_scale,  # S = similarity x this: what the text and HTML show
        },
        "aggregate": agg,
        "settings": dict(vars(s), aggregate=agg),
        "accuracy": acc,
        "per_class": classes,
        "confusions": confusions(run, lib, agg, s),
        "drivers": drivers(run, lib, agg),
        "hygiene": {
            "shared_texts": lib.shared_texts(),
            "near_identical": near,
            "flat": flat,
            "flat_stats": flat_stats,
            "worse_than_baseline": [c for c in classes if c["flagged"]],
            "notes": notes,
        },
        "calibration": audit_section(run, lib, agg, calibration),
        "controls": {
            "baseline": controls.baseline(run, agg),
            "name_description": controls.name_description(run, agg, lib.class_names, s.seed),
            "swap": controls.swap(run, agg),
            "random_words": controls.random_words(run, agg, s.seed),
            "shuffled_descriptor_words": controls.shuffled_words(run, agg),
            "fudd": controls.fudd_summary(run, agg),
            "deletion": deletion(run, lib, agg, s.delete_k, s.random_draws, s.seed),
        },
    }
