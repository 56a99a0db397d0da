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

_EXPORTS = {
    "whyclip.store.errors": (
        "EncoderMismatch",
        "InputError",
        "LibraryNotFound",
        "ModelLoadError",
        "NoStore",
        "StoreError",
        "WhyclipError",
    ),
    "whyclip.store.records": ("DraftClass", "EncoderInfo", "LibraryDraft", "LibraryInfo"),
    "whyclip.store.catalogue": ("Store", "read_schema_state"),
    "whyclip.store.library": ("Library",),
    "whyclip.store.method": (
        "AGGREGATES",
        "BaselineScore",
        "ClassMatrices",
        "ClassScore",
        "Contrast",
        "ContrastRow",
        "DescriptorScore",
        "Explanation",
        "Retrieved",
        "build_class_matrices",
        "score_classes",
        "softmax",
    ),
    "whyclip.store.analysis.audit": ("AuditSettings", "accuracy", "audit", "confusions", "method_label", "per_class"),
    "whyclip.store.analysis.calibration": ("calibrate_run",),
    "whyclip.store.analysis.controls": ("fudd_summary",),
    "whyclip.store.analysis.name_split": ("SplitAccumulator",),
    "whyclip.store.analysis.whatif": ("Edit", "WhatIf", "edited_draft", "plan_edit", "read_edits", "split_pair"),
    "whyclip.store.db.calibrations": ("calibration_for", "latest_calibration", "list_calibrations", "save_calibration"),
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
    "whyclip.store.db.runs": ("check_new_name", "find_run", "list_runs", "load_run", "save_run", "unused_name"),
    "whyclip.store.method.fudd": ("PairTexts", "rerank_with_pairs", "stored_pair_texts"),
    "whyclip.store.method.templates": (
        "DEFAULT_BASELINE",
        "DEFAULT_TEMPLATE",
        "Template",
        "baseline_prompt",
        "check_baseline",
    ),
    "whyclip.store.names": ("normalise",),
    "whyclip.store.vectors.files": ("check_factory",),
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


def __getattr__(name: str):
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
