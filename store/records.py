"""The small records the store hands out and takes in: no ORM rows leave the store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class EncoderInfo:
    """What a library records about the encoder that embedded it."""

    id: str  # identity compared at query time (name + weights fingerprint)
    name: str  # what to pass to --model to load it again
    dim: int
    logit_scale: float


@dataclass(frozen=True)
class LibraryInfo:
    id: int
    name: str
    version: int
    created_at: dt.datetime
    encoder_id: str
    encoder_name: str
    dim: int
    logit_scale: float
    template: str
    baseline_template: str
    aggregate: str
    n_classes: int
    n_descriptors: int
    n_prompts: int
    n_empty_classes: int
    source: str
    source_sha256: str
    index_key: str
    index_factory: str
    recall_at_10: float
    index_params: dict[str, Any] = field(default_factory=dict)  # e.g. the calibrated re-rank depth
    first_descriptor_id: int | None = None  # None: a version written before schema 2
    prompt_rule: str = ""  # the versioned rule that built its prompts, e.g. "paper/1"
    n_pairs: int = 0  # class pairs with contrastive (FuDD) pair descriptors, stored apart from the classes
    note: str = ""  # what its author said about this version (e.g. a saved what-if edit)

    @property
    def index_label(self) -> str:
        """The index with its calibrated knob, e.g. ``PQ256x4fs+rerank150``."""
        p = self.index_params
        if "depth" in p:
            return f"{self.index_factory}{p['depth']}"
        for knob in ("probe", "nprobe", "efSearch"):
            if knob in p:
                return f"{self.index_factory} {knob} {p[knob]}"
        return self.index_factory

    @property
    def retrieval(self) -> dict[str, Any]:
        """How the library-wide hits are found: exactly or not, by which index, its recall@10
        against exact search and the queries it was measured on (``calibrated_on``), and why
        an approximate index answers exactly (``note``)."""
        p = self.index_params
        exact = self.index_factory == "Flat" or "exact_fallback" in p
        return {
            "exact": exact,
            "index": "Flat" if self.index_factory == "Flat" else self.index_label,
            "recall_at_10": 1.0 if exact else float(self.recall_at_10),
            "calibrated_on": p.get("calibrated_on"),
            "note": p.get("exact_fallback") or p.get("warning"),
        }

    def retrieval_summary(self) -> str:
        """One line, e.g. "PQ256x4fs+rerank150, recall@10 0.97 on 240 eval images"."""
        r = self.retrieval
        if r["exact"]:
            return "exact" + (f" ({self.index_factory}: {r['note']})" if r["note"] else "")
        on = f" on {r['calibrated_on']}" if r["calibrated_on"] else ""
        return f"{r['index']}, recall@10 {r['recall_at_10']:.3f}{on}"


@dataclass
class DraftClass:
    """One class of a library about to be written; prompts are already built."""

    name: str
    baseline_prompt: str
    descriptors: list[str]
    prompts: list[str]
    truncated: list[bool]


@dataclass
class LibraryDraft:
    """A complete library version: classes in label order and one vector per distinct prompt."""

    name: str
    encoder: EncoderInfo
    template: str
    baseline_template: str
    classes: list[DraftClass]
    prompt_rows: dict[str, int]  # prompt text -> row of vectors / norms
    vectors: np.ndarray  # (P, d) unit vectors
    norms: np.ndarray  # (P,) raw norms before normalisation
    source: str = ""
    source_sha256: str = ""
    aggregate: str = "mean"
    index_factory: str | None = None  # retrieval index; None: Flat, or ClassIVF when large; or a FAISS factory
    note: str = ""  # stored with the version, shown by 'whyclip libraries'
    # The library's deletion count (Store.deletions) when the work began: publishing refuses
    # when a delete emptied the library since, so a deleted library never comes back by itself
    deletions_seen: int | None = None
    # Publish nothing (AlreadyPublished) when the newest version has the same source sha256,
    # template, baseline, encoder and index: a retried upload makes no duplicate version
    unless_same_as_newest: bool = False
