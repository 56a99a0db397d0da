"""The vector database and the pure method (``whyclip.store``). Imports no torch and no
streamlit; knows no encoder and no screen.

Its parts, by role:

- :mod:`whyclip.store.catalogue`: the :class:`Store`, the one entry point: named, versioned
  libraries, each published whole or not at all;
- :mod:`whyclip.store.library`: a loaded :class:`Library` version, which explains image
  vectors from its database rows and its vector files;
- :mod:`whyclip.store.db`: the database (schema, migrations, embedding and answer caches,
  evaluation runs, calibrations, pair descriptors, lifecycle, paged browsing);
- :mod:`whyclip.store.vectors`: a version's vector files, library-wide retrieval and the
  recall tuning of approximate indexes;
- :mod:`whyclip.store.method`: the method itself, pure numpy: prompt rules and templates,
  aggregates, the explanation records;
- :mod:`whyclip.store.analysis`: analyses of stored runs, pure numpy and scipy: audits,
  controls and their statistics, the name/description split, probability calibration,
  what-if edits.

``whyclip.ingest`` and ``whyclip.ui`` import the names below from ``whyclip.store`` itself,
never from the modules inside it (an import-linter contract in pyproject.toml checks this).
Names are exported lazily, so ``from whyclip.store import AGGREGATES`` (or importing the
method package) does not pull in SQLAlchemy or FAISS.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names for type checkers; at run time they load on first use
    from whyclip.store.analysis.audit import AuditSettings as AuditSettings
    from whyclip.store.analysis.audit import accuracy as accuracy
    from whyclip.store.analysis.audit import audit as audit
    from whyclip.store.analysis.audit import confusions as confusions
    from whyclip.store.analysis.audit import method_label as method_label
    from whyclip.store.analysis.audit import per_class as per_class
    from whyclip.store.analysis.calibration import calibrate_run as calibrate_run
    from whyclip.store.analysis.controls import fudd_summary as fudd_summary
    from whyclip.store.analysis.name_split import SplitAccumulator as SplitAccumulator
    from whyclip.store.analysis.run_records import BASELINE as BASELINE
    from whyclip.store.analysis.run_records import CONTROL as CONTROL
    from whyclip.store.analysis.run_records import FUDD as FUDD
    from whyclip.store.analysis.run_records import TOP as TOP
    from whyclip.store.analysis.run_records import WORDS as WORDS
    from whyclip.store.analysis.run_records import MethodResults as MethodResults
    from whyclip.store.analysis.run_records import RunData as RunData
    from whyclip.store.analysis.run_records import RunInfo as RunInfo
    from whyclip.store.analysis.run_records import rank_results as rank_results
    from whyclip.store.analysis.whatif import Edit as Edit
    from whyclip.store.analysis.whatif import WhatIf as WhatIf
    from whyclip.store.analysis.whatif import edited_draft as edited_draft
    from whyclip.store.analysis.whatif import plan_edit as plan_edit
    from whyclip.store.analysis.whatif import read_edits as read_edits
    from whyclip.store.analysis.whatif import split_pair as split_pair
    from whyclip.store.atomic import new_mode as new_mode
    from whyclip.store.atomic import write_text_atomic as write_text_atomic
    from whyclip.store.catalogue import Store as Store
    from whyclip.store.catalogue import read_schema_state as read_schema_state
    from whyclip.store.db import answer_cache as answer_cache
    from whyclip.store.db import browse as browse
    from whyclip.store.db import embedding_cache as embedding_cache
    from whyclip.store.db import encoder_ids as encoder_ids
    from whyclip.store.db.calibrations import CalibrationInfo as CalibrationInfo
    from whyclip.store.db.calibrations import calibration_for as calibration_for
    from whyclip.store.db.calibrations import latest_calibration as latest_calibration
    from whyclip.store.db.calibrations import list_calibrations as list_calibrations
    from whyclip.store.db.calibrations import save_calibration as save_calibration
    from whyclip.store.db.lifecycle import GC_MIN_AGE_S as GC_MIN_AGE_S
    from whyclip.store.db.lifecycle import collect_garbage as collect_garbage
    from whyclip.store.db.lifecycle import delete_versions as delete_versions
    from whyclip.store.db.lifecycle import export_library as export_library
    from whyclip.store.db.lifecycle import read_sidecar as read_sidecar
    from whyclip.store.db.lifecycle import sidecar_path as sidecar_path
    from whyclip.store.db.lifecycle import sidecar_prompt_changes as sidecar_prompt_changes
    from whyclip.store.db.pair_descriptors import PairDescription as PairDescription
    from whyclip.store.db.pair_descriptors import PairDraft as PairDraft
    from whyclip.store.db.pair_descriptors import PairsWritten as PairsWritten
    from whyclip.store.db.pair_descriptors import StoredPair as StoredPair
    from whyclip.store.db.pair_descriptors import load_pairs as load_pairs
    from whyclip.store.db.pair_descriptors import write_pairs as write_pairs
    from whyclip.store.db.precision_verdicts import StoreVerdicts as StoreVerdicts
    from whyclip.store.db.runs import check_new_name as check_new_name
    from whyclip.store.db.runs import find_run as find_run
    from whyclip.store.db.runs import list_runs as list_runs
    from whyclip.store.db.runs import load_run as load_run
    from whyclip.store.db.runs import run_top1 as run_top1
    from whyclip.store.db.runs import save_run as save_run
    from whyclip.store.db.runs import unused_name as unused_name
    from whyclip.store.errors import AlreadyPublished as AlreadyPublished
    from whyclip.store.errors import EncoderMismatch as EncoderMismatch
    from whyclip.store.errors import InputError as InputError
    from whyclip.store.errors import LibraryDeleted as LibraryDeleted
    from whyclip.store.errors import LibraryNotFound as LibraryNotFound
    from whyclip.store.errors import ModelLoadError as ModelLoadError
    from whyclip.store.errors import NoStore as NoStore
    from whyclip.store.errors import StoreError as StoreError
    from whyclip.store.errors import WhyclipError as WhyclipError
    from whyclip.store.library import Library as Library
    from whyclip.store.method import AGGREGATES as AGGREGATES
    from whyclip.store.method import MAP_KINDS as MAP_KINDS
    from whyclip.store.method import BaselineScore as BaselineScore
    from whyclip.store.method import ClassMatrices as ClassMatrices
    from whyclip.store.method import ClassScore as ClassScore
    from whyclip.store.method import Contrast as Contrast
    from whyclip.store.method import ContrastRow as ContrastRow
    from whyclip.store.method import DescriptorMap as DescriptorMap
    from whyclip.store.method import DescriptorScore as DescriptorScore
    from whyclip.store.method import Explanation as Explanation
    from whyclip.store.method import ImageMaps as ImageMaps
    from whyclip.store.method import Retrieved as Retrieved
    from whyclip.store.method import build_class_matrices as build_class_matrices
    from whyclip.store.method import midpoint_rule as midpoint_rule
    from whyclip.store.method import score_classes as score_classes
    from whyclip.store.method import softmax as softmax
    from whyclip.store.method.fudd import PairTexts as PairTexts
    from whyclip.store.method.fudd import rerank_with_pairs as rerank_with_pairs
    from whyclip.store.method.fudd import stored_pair_texts as stored_pair_texts
    from whyclip.store.method.templates import DEFAULT_BASELINE as DEFAULT_BASELINE
    from whyclip.store.method.templates import DEFAULT_TEMPLATE as DEFAULT_TEMPLATE
    from whyclip.store.method.templates import Template as Template
    from whyclip.store.method.templates import baseline_prompt as baseline_prompt
    from whyclip.store.method.templates import check_baseline as check_baseline
    from whyclip.store.names import MAX_NAME_LENGTH as MAX_NAME_LENGTH
    from whyclip.store.names import check_name as check_name
    from whyclip.store.names import check_text as check_text
    from whyclip.store.names import display_name as display_name
    from whyclip.store.names import normalise as normalise
    from whyclip.store.names import shown as shown
    from whyclip.store.names import shown_text as shown_text
    from whyclip.store.records import DraftClass as DraftClass
    from whyclip.store.records import EncoderInfo as EncoderInfo
    from whyclip.store.records import LibraryDraft as LibraryDraft
    from whyclip.store.records import LibraryInfo as LibraryInfo
    from whyclip.store.vectors.factory_bounds import check_factory_size as check_factory_size
    from whyclip.store.vectors.files import check_factory as check_factory
    from whyclip.store.vectors.files import choose_factory as choose_factory

_EXPORTS = {
    "whyclip.store.errors": (
        "AlreadyPublished",
        "EncoderMismatch",
        "InputError",
        "LibraryDeleted",
        "LibraryNotFound",
        "ModelLoadError",
        "NoStore",
        "StoreError",
        "WhyclipError",
    ),
    "whyclip.store.records": ("DraftClass", "EncoderInfo", "LibraryDraft", "LibraryInfo"),
    "whyclip.store.atomic": ("new_mode", "write_text_atomic"),
    "whyclip.store.catalogue": ("Store", "read_schema_state"),
    "whyclip.store.library": ("Library",),
    "whyclip.store.method": (
        "AGGREGATES",
        "BaselineScore",
        "ClassMatrices",
        "ClassScore",
        "Contrast",
        "ContrastRow",
        "DescriptorMap",
        "DescriptorScore",
        "Explanation",
        "ImageMaps",
        "MAP_KINDS",
        "Retrieved",
        "build_class_matrices",
        "midpoint_rule",
        "score_classes",
        "softmax",
    ),
    "whyclip.store.analysis.audit": ("AuditSettings", "accuracy", "audit", "confusions", "method_label", "per_class"),
    "whyclip.store.analysis.calibration": ("calibrate_run",),
    "whyclip.store.analysis.controls": ("fudd_summary",),
    "whyclip.store.analysis.name_split": ("SplitAccumulator",),
    "whyclip.store.analysis.whatif": ("Edit", "WhatIf", "edited_draft", "plan_edit", "read_edits", "split_pair"),
    "whyclip.store.db.calibrations": (
        "CalibrationInfo",
        "calibration_for",
        "latest_calibration",
        "list_calibrations",
        "save_calibration",
    ),
    "whyclip.store.db.lifecycle": (
        "GC_MIN_AGE_S",
        "collect_garbage",
        "delete_versions",
        "export_library",
        "read_sidecar",
        "sidecar_path",
        "sidecar_prompt_changes",
    ),
    "whyclip.store.db.pair_descriptors": (
        "PairDescription",
        "PairDraft",
        "PairsWritten",
        "StoredPair",
        "load_pairs",
        "write_pairs",
    ),
    "whyclip.store.db.precision_verdicts": ("StoreVerdicts",),
    "whyclip.store.analysis.run_records": (
        "BASELINE",
        "CONTROL",
        "FUDD",
        "MethodResults",
        "RunData",
        "RunInfo",
        "TOP",
        "WORDS",
        "rank_results",
    ),
    "whyclip.store.db.runs": (
        "check_new_name",
        "find_run",
        "list_runs",
        "load_run",
        "run_top1",
        "save_run",
        "unused_name",
    ),
    "whyclip.store.method.fudd": ("PairTexts", "rerank_with_pairs", "stored_pair_texts"),
    "whyclip.store.method.templates": (
        "DEFAULT_BASELINE",
        "DEFAULT_TEMPLATE",
        "Template",
        "baseline_prompt",
        "check_baseline",
    ),
    "whyclip.store.names": (
        "MAX_NAME_LENGTH",
        "check_name",
        "check_text",
        "display_name",
        "normalise",
        "shown",
        "shown_text",
    ),
    "whyclip.store.vectors.factory_bounds": ("check_factory_size",),
    "whyclip.store.vectors.files": ("check_factory", "choose_factory"),
}
# modules of the database layer whose functions are used together (``embedding_cache.lookup``)
_MODULES = {
    "answer_cache": "whyclip.store.db.answer_cache",
    "browse": "whyclip.store.db.browse",
    "embedding_cache": "whyclip.store.db.embedding_cache",
    "encoder_ids": "whyclip.store.db.encoder_ids",
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted([*_WHERE, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value = importlib.import_module(_MODULES[name])
        globals()[name] = value
        return value
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'whyclip.store' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
