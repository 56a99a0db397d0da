"""The one error every way in gives for a library name or version the store does not hold:
close names for a misspelt name ("did you mean 'demo'?"), the library's own versions for a
version it lacks. :meth:`whyclip.store.catalogue.Store.library`, the run lookups and
``delete`` all raise it, so every command that takes ``--library`` says the same line."""

from __future__ import annotations

import difflib

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from whyclip.store.db import schema
from whyclip.store.db.schema import LibraryRow
from whyclip.store.errors import LibraryNotFound
from whyclip.store.names import shown

MAX_SUGGESTED = 3  # close names a LibraryNotFound suggests
MAX_VERSIONS_LISTED = 10  # versions named in full; beyond, the first and last three


def _versions_text(versions: list[int]) -> str:
    if len(versions) <= MAX_VERSIONS_LISTED:
        return ", ".join(map(str, versions))
    head, tail = ", ".join(map(str, versions[:3])), ", ".join(map(str, versions[-3:]))
    return f"{head}, ..., {tail} ({len(versions)} in all)"


def library_not_found(s: Session, name: str, version: int | None = None, doing: str = "") -> LibraryNotFound:
    """The error for an unknown ``name`` or ``version``: at most three close names, never
    the list of libraries; for a version the library lacks, the versions it has. ``doing``
    ends the subject (" to delete")."""
    what = f"library '{shown(name)}'" + (f" version {version}" if version is not None else "") + doing
    ready = LibraryRow.status == schema.READY
    own = sorted(s.scalars(select(LibraryRow.version).where(ready, LibraryRow.name == name)).all())
    if own:
        return LibraryNotFound(f"no {what}; its versions are {_versions_text(own)}")
    names = s.scalars(select(LibraryRow.name).where(ready).distinct()).all()
    if not names:
        hint = "the store has no libraries yet (add one with 'whyclip ingest FILE --library NAME')"
    else:
        close = difflib.get_close_matches(name, names, n=MAX_SUGGESTED, cutoff=0.6)
        listed = ", ".join("'" + shown(n) + "'" for n in close)
        hint = f"did you mean {listed}?" if close else "see 'whyclip libraries'"
    return LibraryNotFound(f"no {what}; {hint}")


def check_library_known(engine: Engine, name: str) -> None:
    """Raise :func:`library_not_found`'s error unless ``name`` has a ready version (for the
    lookups that find nothing under a name, such as its evaluation runs)."""
    with Session(engine) as s:
        found = s.scalar(
            select(LibraryRow.id).where(LibraryRow.name == name, LibraryRow.status == schema.READY).limit(1)
        )
        if found is None:
            raise library_not_found(s, name)
