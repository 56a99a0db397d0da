"""Calibration of a library's class probabilities, fitted on a stored evaluation run.
numpy and scipy only; no model (a run keeps its image vectors).

A library's probabilities are ``softmax(z)`` with CLIP's logits ``z = logit_scale x score``
(docs/method.md). Temperature scaling (Guo et al., ICML 2017) replaces them with
``softmax(z / T)``: one number, fitted by minimising the negative log-likelihood (NLL) of
the true classes; it never changes a prediction. LeVine et al. (2023, "Enabling
calibration in the zero-shot inference of large vision-language models") find that one
temperature per CLIP model carries over across datasets and prompts. Optionally a bias per
class is fitted jointly, ``softmax(z / T + b)``, with a mild L2 penalty (a standard normal
prior on each bias, ``BIAS_PRIOR_SD``, which also makes them unique); it can change
predictions. Classes with no image in the fit split keep bias 0.

Both fits are convex in ``beta = 1 / T`` (and ``b``): the NLL is a log-sum-exp of functions
linear in the parameters minus one of them. The temperature alone is a bounded 1-D search
over ``beta`` (Brent's method, ``scipy.optimize.minimize_scalar``); with biases, L-BFGS-B
on the exact gradient.

The run is split, seeded and stratified by class, into a fit part and a held-out part;
every figure is measured on the held-out part, before and after:

* **ECE**: expected calibration error with ``ECE_BINS`` equal-width bins of the top-1
  confidence (a bin is ``(lower, upper]``, the first also takes 0): the image-weighted mean
  of ``|accuracy - mean confidence|`` over the bins (Guo et al., 2017).
* **NLL**: the mean of ``-log p(true class)``.
* **accuracy**: top-1, with its Wilson 95% interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from whyclip.store.analysis.stats import wilson
from whyclip.store.errors import InputError

if TYPE_CHECKING:  # a loaded version, a run and a stored calibration are passed in; nothing here reads them
    from whyclip.store.analysis.run_records import RunData
    from whyclip.store.db.calibrations import CalibrationInfo
    from whyclip.store.library import Library

ECE_BINS = 15
BETA_BOUNDS = (1e-3, 1e3)  # 1 / T: temperatures from 0.001 to 1000
BIAS_PRIOR_SD = 1.0  # the L2 penalty is a N(0, sd^2) prior on each bias: ||b||^2 / (2 sd^2 n) on the mean NLL
MIN_FIT, MIN_HELD_OUT = 10, 10  # images on each side
FIT_FRACTION = 0.5
SCORE_BLOCK = 1024  # images scored at a time


@dataclass(frozen=True)
class Fit:
    temperature: float
    biases: np.ndarray | None  # (C,), or None without --per-class-bias
    at_bound: bool  # the temperature hit a search bound (an all-correct fit split, say)


def logsumexp(u: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """``log(sum(exp(u)))`` along ``axis``, shifted by the maximum (plain numpy: scipy's
    general version measured 5x slower on a 10,000 x 1,000 block)."""
    m = u.max(axis=axis, keepdims=True)
    out: np.ndarray = np.log(np.exp(u - m).sum(axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def calibrated_logits(logits: np.ndarray, temperature: float, biases: np.ndarray | None = None) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    return z if biases is None else z + biases


def probabilities(logits: np.ndarray, temperature: float = 1.0, biases: np.ndarray | None = None) -> np.ndarray:
    z = calibrated_logits(logits, temperature, biases)
    probs: np.ndarray = np.exp(z - logsumexp(z, axis=-1, keepdims=True))
    return probs


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0, biases: np.ndarray | None = None) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T + b)``."""
    z = calibrated_logits(logits, temperature, biases)
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(len(labels)), labels]))


def bin_of(conf: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """The bin of each confidence: ``b`` for ``b / n_bins < conf <= (b + 1) / n_bins`` (0 from 0)."""
    return np.searchsorted(np.arange(1, n_bins) / n_bins, conf, side="left")


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per equal-width confidence bin: its bounds, image count, mean top-1 confidence and
    accuracy (both 0 for an empty bin)."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = bin_of(conf, n_bins)
    out = []
    for b in range(n_bins):
        m = which == b
        k = int(m.sum())
        out.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": k,
                "confidence": float(conf[m].mean()) if k else 0.0,
                "accuracy": float(correct[m].mean()) if k else 0.0,
            }
        )
    return out


def ece_from_bins(bins: list[dict[str, Any]]) -> float:
    n = sum(b["count"] for b in bins)
    return float(sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / n) if n else 0.0


def ece(probs: np.ndarray, labels: np.ndarray, n_bins: int = ECE_BINS) -> float:
    return ece_from_bins(reliability_bins(probs, labels, n_bins))


def split(labels: np.ndarray, fraction: float = FIT_FRACTION, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of image positions into (fit, held out), stratified by class: of a
    class's ``n`` images, ``floor(n * fraction + u)`` go to the fit part (``u`` uniform, so
    a class of one image falls on either side with the right odds)."""
    if not 0 < fraction < 1:
        raise InputError(f"--fit-fraction must be between 0 and 1 (exclusive), not {fraction}")
    rng = np.random.default_rng([seed, 12])
    labels = np.asarray(labels)
    fit, held = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(np.floor(len(idx) * fraction + rng.random()))
        fit.append(idx[:k])
        held.append(idx[k:])

    def cat(parts: list[np.ndarray]) -> np.ndarray:
        return np.sort(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)

    return cat(fit), cat(held)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> Fit:
    """The temperature minimising the NLL (a bounded convex 1-D search over ``1 / T``)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(labels))
    top = z.max(axis=1, keepdims=True)
    shifted = z - top  # <= 0: for beta > 0, lse(beta z) = beta max z + log sum exp(beta (z - max z))
    true = shifted[rows, labels]

    def loss(log_beta: float) -> float:
        beta = np.exp(log_beta)
        return float(np.mean(np.log(np.exp(beta * shifted).sum(axis=1)) - beta * true))

    lo, hi = np.log(BETA_BOUNDS[0]), np.log(BETA_BOUNDS[1])
    r = minimize_scalar(loss, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    log_beta = float(r.x)
    # Brent's bounded search stops just inside a bound it is pushed against
    edge = min(log_beta - lo, hi - log_beta) < 1e-3
    return Fit(float(np.exp(-log_beta)), None, bool(edge))


def fit_temperature_and_biases(
    logits: np.ndarray, labels: np.ndarray, n_classes: int, prior_sd: float = BIAS_PRIOR_SD
) -> Fit:
    """Temperature and per-class biases, jointly (L-BFGS-B on the convex penalised NLL);
    classes without an image in ``labels`` keep bias 0."""
    z = np.asarray(logits, dtype=np.float64)
    n = len(labels)
    rows = np.arange(n)
    l2 = 1.0 / (prior_sd**2 * n)
    seen = np.zeros(n_classes, bool)
    seen[np.unique(labels)] = True
    free = np.flatnonzero(seen)
    onehot_mean = np.bincount(labels, minlength=n_classes)[free] / n
    start = fit_temperature(z, labels)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        beta, b = params[0], np.zeros(n_classes)
        b[free] = params[1:]
        u = beta * z + b
        lse = logsumexp(u, axis=1)
        p = np.exp(u - lse[:, None])
        value = np.mean(lse - u[rows, labels]) + 0.5 * l2 * float(b @ b)
        g_beta = float(np.mean((p * z).sum(axis=1) - z[rows, labels]))
        g_b = p[:, free].mean(axis=0) - onehot_mean + l2 * b[free]
        return value, np.concatenate([[g_beta], g_b])

    x0 = np.concatenate([[1.0 / start.temperature], np.zeros(len(free))])
    bounds = [BETA_BOUNDS] + [(None, None)] * len(free)
    r = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 1000, "gtol": 1e-8})
    biases = np.zeros(n_classes)
    biases[free] = r.x[1:]
    beta = float(r.x[0])
    edge = beta <= BETA_BOUNDS[0] * 1.001 or beta >= BETA_BOUNDS[1] * 0.999
    return Fit(1.0 / beta, biases, bool(edge))


def _side(
    probs: np.ndarray, labels: np.ndarray, logits: np.ndarray, t: float, b: np.ndarray | None, seed: int
) -> dict[str, Any]:
    bins = reliability_bins(probs, labels)
    correct = probs.argmax(axis=1) == labels
    k, n = int(correct.sum()), len(labels)
    return {
        "ece": ece_from_bins(bins),
        "ece_ci95": _ece_ci(probs, labels, seed),
        "nll": nll(logits, labels, t, b),
        "accuracy": k / n,
        "ci95": wilson(k, n),
        "bins": bins,
    }


def _ece_ci(probs: np.ndarray, labels: np.ndarray, seed: int, reps: int = 1000) -> list[float]:
    """Percentile 95% interval of the ECE, resampling held-out images (seeded)."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    which = bin_of(conf, ECE_BINS)
    n = len(labels)
    gap = correct - conf
    rng = np.random.default_rng([seed, 13])
    values = np.empty(reps)
    for r in range(reps):  # ECE = sum over bins of |sum of (correct - confidence)| / n
        i = rng.integers(0, n, size=n)
        values[r] = np.abs(np.bincount(which[i], weights=gap[i], minlength=ECE_BINS)).sum() / n
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def calibrate(
    logits: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    *,
    per_class_bias: bool = False,
    fraction: float = FIT_FRACTION,
    seed: int = 0,
) -> dict[str, Any]:
    """Fit on a seeded split of ``(logits, labels)`` and measure on the held-out part.

    Returns plain data: the fit (``temperature``, ``biases`` as a list or None), the split
    sizes, and before/after ECE, NLL and accuracy (with intervals) and the reliability
    ``bins`` of each side. Too few images for both parts is an :class:`InputError`."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if n < MIN_FIT + MIN_HELD_OUT:
        raise InputError(
            f"calibration needs at least {MIN_FIT + MIN_HELD_OUT} images ({MIN_FIT} to fit, {MIN_HELD_OUT} "
            f"to check on), this run has {n}: evaluate a larger labelled set with 'whyclip eval'"
        )
    fit_idx, held_idx = split(labels, fraction, seed)
    if len(fit_idx) < MIN_FIT or len(held_idx) < MIN_HELD_OUT:
        raise InputError(
            f"a fit fraction of {fraction} leaves {len(fit_idx)} images to fit and {len(held_idx)} to check on "
            f"(at least {MIN_FIT} and {MIN_HELD_OUT} needed): choose a --fit-fraction nearer 0.5"
        )
    zf, yf = logits[fit_idx], labels[fit_idx]
    fit = fit_temperature_and_biases(zf, yf, n_classes) if per_class_bias else fit_temperature(zf, yf)
    figures = measure(logits[held_idx], labels[held_idx], fit.temperature, fit.biases, seed)
    notes = []
    if np.all(zf.argmax(axis=1) == yf):
        notes.append(
            f"every image of the fit split is predicted right, so its NLL only falls as the temperature "
            f"falls: {fit.temperature:.3g} is where it stops changing measurably; a set with some errors "
            "fits a more telling temperature"
        )
    elif fit.at_bound:
        notes.append(f"the temperature reached the end of its search range ({fit.temperature:.3g})")
    missing = n_classes - len(np.unique(yf))
    if per_class_bias and missing:
        notes.append(f"{missing} of {n_classes} classes have no image in the fit split: their bias is 0")
    return {
        "temperature": fit.temperature,
        "per_class_bias": per_class_bias,
        "biases": None if fit.biases is None else [float(b) for b in fit.biases],
        "seed": seed,
        "fit_fraction": fraction,
        "n_fit": len(fit_idx),
        "n_held_out": len(held_idx),
        "calibrated": True,
        "measured_on": f"the held-out part of the run ({len(held_idx)} images)",
        **figures,
        "notes": notes,
    }


def measure(
    logits: np.ndarray, labels: np.ndarray, temperature: float, biases: np.ndarray | None = None, seed: int = 0
) -> dict[str, Any]:
    """ECE (with a bootstrap interval), NLL and accuracy (Wilson interval) of ``labels``
    under the library's probabilities (before) and under ``temperature`` and ``biases``
    (after), with the reliability ``bins`` of both."""
    labels = np.asarray(labels, dtype=np.int64)
    before = _side(probabilities(logits), labels, logits, 1.0, None, seed)
    after = _side(probabilities(logits, temperature, biases), labels, logits, temperature, biases, seed)
    bins = [
        {
            "lower": x["lower"],
            "upper": x["upper"],
            "before": {k: x[k] for k in ("count", "confidence", "accuracy")},
            "after": {k: y[k] for k in ("count", "confidence", "accuracy")},
        }
        for x, y in zip(before["bins"], after["bins"], strict=True)
    ]
    return {
        "n": len(labels),
        "n_bins": ECE_BINS,
        "ece_before": before["ece"],
        "ece_after": after["ece"],
        "ece_before_ci95": before["ece_ci95"],
        "ece_after_ci95": after["ece_ci95"],
        "nll_before": before["nll"],
        "nll_after": after["nll"],
        "accuracy_before": before["accuracy"],
        "accuracy_before_ci95": before["ci95"],
        "accuracy_after": after["accuracy"],
        "accuracy_after_ci95": after["ci95"],
        "bins": bins,
    }


def run_logits(
    run: RunData, lib: Library, aggregate: str, progress: Callable[[int, int], None] | None = None
) -> np.ndarray:
    """(N, C) logits of every image of a stored run under the library version it was made
    with, rescored from the run's image vectors (a run keeps only its top classes)."""
    if lib.info.id != run.info.library_id:
        raise InputError(
            f"run {run.info.name!r} was made with library version {run.info.library_version}, "
            f"not {lib.info.version}: load that version"
        )
    parts = []
    for s in range(0, len(run.vectors), SCORE_BLOCK):
        parts.append(
            np.asarray(lib.scores(run.vectors[s : s + SCORE_BLOCK], aggregate), np.float64) * lib.info.logit_scale
        )
        if progress:
            progress(min(s + SCORE_BLOCK, len(run.vectors)), len(run.vectors))
    return np.concatenate(parts) if parts else np.zeros((0, len(lib.class_names)))


def calibrate_run(
    run: RunData,
    lib: Library,
    aggregate: str | None = None,
    *,
    per_class_bias: bool = False,
    fraction: float = FIT_FRACTION,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """:func:`calibrate` on a stored run, with what it was fitted on named in the result."""
    agg = aggregate or lib.info.aggregate
    report = calibrate(
        run_logits(run, lib, agg, progress),
        run.labels,
        len(lib.class_names),
        per_class_bias=per_class_bias,
        fraction=fraction,
        seed=seed,
    )
    return {
        "library": lib.info.name,
        "version": lib.info.version,
        "run": run.info.name,
        "run_id": run.info.id,
        "aggregate": agg,
        "logit_scale": lib.info.logit_scale,
        "classes": len(lib.class_names),
        **report,
    }


def audit_section(run: RunData, lib: Library, aggregate: str, cal: CalibrationInfo | None = None) -> dict[str, Any]:
    """The audit's calibration figures for a run. With a stored calibration of this library
    version and aggregate: its held-out figures when it was fitted on this run, else it is
    applied to every image of this run (all unseen by the fit). Without one: the library's
    own probabilities over every image (ECE, NLL, accuracy and their reliability bins)."""
    logits = run_logits(run, lib, aggregate)
    if len(run.labels) == 0:
        return {"calibrated": False, "note": "the run has no images"}
    if cal is not None and cal.aggregate == aggregate:
        head = {
            "calibrated": True,
            "calibration_id": cal.id,
            "fitted_on": cal.run_name,
            "temperature": cal.temperature,
            "per_class_bias": cal.biases is not None,
            "created_at": cal.created_at.isoformat(),
        }
        if cal.run_id == run.info.id:
            report = {k: v for k, v in cal.report.items() if k != "biases"}
            return {
                **report,
                **head,
                "measured_on": f"the held-out part of this run ({cal.report['n_held_out']} images)",
            }
        return {
            **head,
            **measure(logits, run.labels, cal.temperature, cal.biases, 0),
            "measured_on": (
                f"every image of this run ({len(run.labels)}; the calibration was fitted on run {cal.run_name!r})"
            ),
        }
    m = measure(logits, run.labels, 1.0)
    note = (
        f"no calibration of {lib.info.name} v{lib.info.version} ({aggregate}) is stored: these are the library's own "
        f"probabilities; 'whyclip calibrate --library {lib.info.name} --run {run.info.name}' fits one"
    )
    return {
        "calibrated": False,
        "note": note,
        "measured_on": f"every image of this run ({len(run.labels)})",
        **{k: v for k, v in m.items() if not k.endswith(("_after", "_after_ci95"))},
        "bins": [{k: v for k, v in b.items() if k != "after"} for b in m["bins"]],
    }
