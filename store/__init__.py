"""The vector database (``whyclip.store``). Imports no torch and no streamlit.

Its parts, by role:

- :mod:`whyclip.store.method`: pure scoring and explanation records (numpy only);
- :mod:`whyclip.store.db`: the database: schema, migrations, the :class:`Store`, the
  embedding cache, paged browsing;
- :mod:`whyclip.store.vectors`: a version's vector files and library-wide retrieval;
- :mod:`whyclip.store.analysis`: stored evaluation runs and their audits;
- :mod:`whyclip.store.library`: a loaded :class:`Library` version, which explains images
  from the database rows and the vector files.

Names are exported lazily, so ``from whyclip.store import AGGREGATES`` (or importing the
scoring package) does not pull in SQLAlchemy or FAISS.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "whyclip.store.errors": ("EncoderMismatch", "InputError", "LibraryNotFound", "ModelLoadError", "NoStore",
                             "StoreError", "WhyclipError"),
    "whyclip.store.method": ("AGGREGATES", "BaselineScore", "ClassMatrices", "ClassScore", "Contrast", "ContrastRow",
                              "DescriptorScore", "Explanation", "Retrieved", "build_class_matrices", "score_classes",
                              "softmax"),
    "whyclip.store.records": ("DraftClass", "EncoderInfo", "LibraryDraft", "LibraryInfo"),
    "whyclip.store.catalogue": ("Store",),
    "whyclip.store.library": ("Library",),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'whyclip.store' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
