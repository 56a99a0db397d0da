"""whyclip: explainable zero-shot image classification by visual descriptors.

The Python API, the same core the command line, the HTTP service and the dashboard call::

    import whyclip

    wc = whyclip.open()  # or whyclip.open(home="data", db="postgresql+psycopg://...")
    wc.ingest("descriptors.json", library="animals")
    (exp,) = wc.explain(["frog.jpg"], library="animals")
    print(exp.to_text())

:func:`open` gives a :class:`Workspace` (``explain``, ``explain_files``, ``ingest``, ``eval``,
``libraries``, ``library``). The packages beneath are named by role: ``whyclip.store`` (the
vector database and the pure method), ``whyclip.ingest`` (everything that needs a model:
the encoder and the services) and ``whyclip.ui`` (every way in). Names load on first use, so
``import whyclip`` imports nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily
    from whyclip.ingest.cluster import RayOptions
    from whyclip.ingest.services.explain import ExplainLimits, ExplainOptions, ImageFailure
    from whyclip.ingest.services.maps import MapOptions
    from whyclip.ingest.services.workspace import Workspace
    from whyclip.store import (
        EncoderMismatch,
        Explanation,
        InputError,
        LibraryInfo,
        LibraryNotFound,
        ModelLoadError,
        NoStore,
        StoreError,
        WhyclipError,
    )

_EXPORTS = {
    "whyclip.ingest.services.workspace": ("Workspace",),
    "whyclip.ingest.services.explain": ("ExplainLimits", "ExplainOptions", "ImageFailure"),
    "whyclip.ingest.services.maps": ("MapOptions",),
    "whyclip.ingest.cluster": ("RayOptions",),
    "whyclip.store": (
        "EncoderMismatch",
        "Explanation",
        "InputError",
        "LibraryInfo",
        "LibraryNotFound",
        "ModelLoadError",
        "NoStore",
        "StoreError",
        "WhyclipError",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
# Spelled out, not computed, so linters and type checkers see the public names; the assert
# below keeps the list equal to _EXPORTS.
__all__ = [
    "EncoderMismatch",
    "ExplainLimits",
    "ExplainOptions",
    "Explanation",
    "ImageFailure",
    "InputError",
    "LibraryInfo",
    "LibraryNotFound",
    "MapOptions",
    "ModelLoadError",
    "NoStore",
    "RayOptions",
    "StoreError",
    "WhyclipError",
    "Workspace",
    "open",
]
assert sorted(__all__) == sorted([*_WHERE, "open"])


def open(
    home=None,
    db: str | None = None,
    *,
    device: str | None = None,
    precision: str = "auto",
    create: bool = True,
) -> Workspace:
    """Open the whyclip store in ``home`` (default: $WHYCLIP_HOME, else the per-user data
    directory) with its metadata in ``db`` (an SQLAlchemy URL; default: $WHYCLIP_DB, else
    SQLite in ``home``). ``create=False`` refuses a store that does not exist yet.
    ``device`` and ``precision`` apply to the CLIP models the workspace loads."""
    from whyclip.ingest.services.workspace import open_workspace

    return open_workspace(home, db, device=device, precision=precision, create=create)


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'whyclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
