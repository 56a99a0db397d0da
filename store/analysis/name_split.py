"""How much of a class's score its name alone gives, and how much the descriptor content
adds. numpy only; computed by ``whyclip eval`` (it needs the bare descriptors' vectors) and
stored with the run; audits read it.

For an image ``i`` and a class ``c``, three scores under the same aggregate:
``S`` the library's prompts (under the paper's template the name *and* the descriptor),
``N`` the class-name prompt alone (the baseline), ``B`` the bare descriptors
(``{descriptor}``, the description alone). Each is centred over the classes of the image
(a shift common to every class never changes a decision). Over the whole run, least
squares fits ``S' ~ a N' + b B'``; the name part of an entry is ``a N'`` and the
description part ``b B'``. A class's ``name_share`` is ``sum |a N'| / (sum |a N'| + sum
|b B'|)`` over its own images' true-class entries, ``description_share`` the rest; the
run's shares are the same sums over every image; ``explained`` is the fit's R^2 (how much
of ``S'`` the two parts account for at all).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class SplitAccumulator:
    """Fed blocks of (images x classes) scores; ``result()`` is the stored split."""

    def __init__(self) -> None:
        self.gram = np.zeros((2, 2))
        self.rhs = np.zeros(2)
        self.total = 0.0
        self.name: list[np.ndarray] = []  # |N'| of each image's true class
        self.desc: list[np.ndarray] = []

    def add(self, full: np.ndarray, name: np.ndarray, bare: np.ndarray, labels: np.ndarray) -> None:
        s, n, b = (
            np.asarray(x, np.float64) - np.asarray(x, np.float64).mean(axis=1, keepdims=True)
            for x in (full, name, bare)
        )
        self.gram += [[(n * n).sum(), (n * b).sum()], [(n * b).sum(), (b * b).sum()]]
        self.rhs += [(s * n).sum(), (s * b).sum()]
        self.total += (s * s).sum()
        rows = np.arange(len(labels))
        self.name.append(np.abs(n[rows, labels]))
        self.desc.append(np.abs(b[rows, labels]))

    def result(self) -> dict[str, Any]:
        coef = np.linalg.lstsq(self.gram, self.rhs, rcond=None)[0] if self.gram.any() else np.zeros(2)
        resid = self.total - 2 * coef @ self.rhs + coef @ self.gram @ coef
        explained = 1 - resid / self.total if self.total > 0 else 0.0
        name = np.concatenate(self.name) if self.name else np.zeros(0)
        desc = np.concatenate(self.desc) if self.desc else np.zeros(0)
        return {
            "a": float(coef[0]),
            "b": float(coef[1]),
            "explained": float(explained),
            "name": [float(f"{x:.6g}") for x in name],
            "description": [float(f"{x:.6g}") for x in desc],
        }


def shares(split: dict[str, Any], mask: np.ndarray | None = None) -> tuple[float, float]:
    """(name_share, description_share) over the images in ``mask`` (default: all)."""
    name = abs(split["a"]) * np.asarray(split["name"])
    desc = abs(split["b"]) * np.asarray(split["description"])
    if mask is not None:
        name, desc = name[mask], desc[mask]
    total = name.sum() + desc.sum()
    if total <= 0:
        return 0.0, 0.0
    return float(name.sum() / total), float(desc.sum() / total)


def bootstrap_share(split: dict[str, Any], seed: int = 0, reps: int = 2000) -> list[float]:
    """Percentile 95% interval of the run's ``name_share``, resampling images."""
    name = abs(split["a"]) * np.asarray(split["name"])
    desc = abs(split["b"]) * np.asarray(split["description"])
    if len(name) == 0:
        return [0.0, 0.0]
    idx = np.random.default_rng(seed).integers(0, len(name), size=(reps, len(name)))
    num, den = name[idx].sum(axis=1), (name[idx] + desc[idx]).sum(axis=1)
    values = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def image_split(full: np.ndarray, name: np.ndarray, bare: np.ndarray) -> dict[str, Any]:
    """The same split for one image, over its classes: ``full``, ``name`` and ``bare`` are
    its (C,) scores; each is centred over the classes and ``S' ~ a N' + b B'`` is fitted by
    least squares over them. ``name_share`` and ``description_share`` are (C,) arrays:
    ``|a N'_c| / (|a N'_c| + |b B'_c|)`` and the rest (0 and 0 where both parts are 0)."""
    s, n, b = (np.asarray(x, np.float64) - np.asarray(x, np.float64).mean() for x in (full, name, bare))
    design = np.stack([n, b], axis=1)
    coef = np.linalg.lstsq(design, s, rcond=None)[0] if design.any() else np.zeros(2)
    total = float(s @ s)
    resid = s - design @ coef
    explained = 1 - float(resid @ resid) / total if total > 0 else 0.0
    name_part, desc_part = np.abs(coef[0] * n), np.abs(coef[1] * b)
    den = name_part + desc_part
    safe = np.where(den > 0, den, 1.0)
    return {
        "a": float(coef[0]),
        "b": float(coef[1]),
        "explained": float(explained),
        "name_share": np.where(den > 0, name_part / safe, 0.0),
        "description_share": np.where(den > 0, desc_part / safe, 0.0),
    }
