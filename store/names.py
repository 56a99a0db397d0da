"""Matching a name as a user writes it to a library's class names: exactly first, then
ignoring case, underscores and repeated spaces (how ``eval`` matches dataset labels and
``explain --compare`` matches class names)."""

from __future__ import annotations


def normalise(name: str) -> str:
    """``"Tree_frog "`` and ``"tree  frog"`` both become ``"tree frog"``."""
    return " ".join(name.replace("_", " ").split()).casefold()


def loose_matches(name: str, class_names: list[str]) -> list[int]:
    """Positions of the classes ``name`` names: the exact one, else every class equal to it
    under :func:`normalise` (none, one, or several when the match is ambiguous)."""
    exact = [i for i, n in enumerate(class_names) if n == name]
    if exact:
        return exact[:1]
    key = normalise(name)
    return [i for i, n in enumerate(class_names) if normalise(n) == key]
