"""The small records the store hands out and takes in: no ORM rows leave the store."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

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
    index_params: dict = field(default_factory=dict)  # e.g. ClassIVF's calibrated probe
    first_descriptor_id: int | None = None  # None: a version written before schema 2
    prompt_rule: str = ""  # the versioned rule that built its prompts, e.g. "paper/1"
    n_pairs: int = 0  # class pairs with contrastive (FuDD) pair descriptors, stored apart from the classes
    note: str = ""  # what its author said about this version (e.g. a saved what-if edit)


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
