"""The records of an evaluation run, pure numpy: what it keeps per image (its file, true
class and unit vector) and, for every way of scoring (each aggregate, the class-name
baseline, the controls, FuDD), the top classes with their scores and the true class's rank.
:mod:`whyclip.store.db.runs` stores and reads them; the analyses read nothing else."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from whyclip.store.method import AGGREGATES

BASELINE = "baseline"
CONTROL = "control:"  # + aggregate: the shuffled-descriptor-words control library
BARE, SWAP = "bare:", "swap:"  # + aggregate: descriptors without the class name; swapped descriptors
WORDS = "words"  # + draw + ":" + aggregate: random words from a general vocabulary
WORD_DRAWS_MAX = 100
FUDD = "fudd"  # the descriptors' top classes re-ranked with the version's pair descriptors (FuDD)
METHODS = (
    *AGGREGATES,
    BASELINE,
    FUDD,
    *(p + a for p in (CONTROL, BARE, SWAP) for a in AGGREGATES),
    *(f"{WORDS}{j}:{a}" for j in range(WORD_DRAWS_MAX) for a in AGGREGATES),
)
TOP = 5  # classes kept per image and method


@dataclass(frozen=True)
class RunInfo:
    id: int
    name: str
    library_name: str
    library_version: int
    library_id: int
    created_at: dt.datetime
    dataset: str
    encoder_key: str
    n_images: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dict(vars(self))
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass(frozen=True)
class MethodResults:
    """One way of scoring every image of a run: ``top`` (N, k) class positions best first,
    their ``top_scores``, the true class's score and its rank (1 = predicted)."""

    top: np.ndarray
    top_scores: np.ndarray
    true_score: np.ndarray
    true_rank: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        return self.top[:, 0]


@dataclass(frozen=True)
class RunData:
    info: RunInfo
    paths: list[str]
    labels: np.ndarray  # (N,) class positions
    vectors: np.ndarray  # (N, d) unit image vectors
    results: dict[str, MethodResults]


def rank_results(scores: np.ndarray, labels: np.ndarray, k: int = TOP) -> MethodResults:
    """Top ``k`` classes per row of ``scores`` (B, C), best first (ties: lower position
    first), and the true class's score and rank under the same order."""
    scores = np.asarray(scores, dtype=np.float64)
    n, c = scores.shape
    k = min(k, c)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    rows = np.arange(n)
    true = scores[rows, labels]
    above = (scores > true[:, None]).sum(axis=1)
    tied_before = ((scores == true[:, None]) & (np.arange(c)[None, :] < labels[:, None])).sum(axis=1)
    return MethodResults(
        order.astype(np.int64),
        np.take_along_axis(scores, order, axis=1),
        true,
        (1 + above + tied_before).astype(np.int64),
    )
