"""The project's exceptions. Each message names what was wrong and how to fix it.

The CLI turns any :class:`WhyclipError` into one line on stderr and a non-zero exit;
the dashboard turns it into ``st.error``.
"""

from __future__ import annotations


class WhyclipError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class LibraryNotFound(WhyclipError):
    """No ready library of that name (or version) in the store."""


class LibraryDeleted(LibraryNotFound):
    """A library was deleted while a new version of it was being built: nothing published."""


class AlreadyPublished(WhyclipError):
    """The library's newest version was built from the same content with the same settings:
    nothing was published (``version`` names it)."""

    def __init__(self, message: str, version: int):
        super().__init__(message)
        self.version = version


class EncoderMismatch(WhyclipError):
    """A library is queried with vectors from a different encoder."""


class StoreError(WhyclipError):
    """The store itself is missing, unreadable or inconsistent."""


class NoStore(StoreError):
    """There is no whyclip database at the given place yet."""


class InputError(WhyclipError):
    """A user-supplied file or argument is invalid."""


class ModelLoadError(WhyclipError):
    """A CLIP model could not be loaded."""
