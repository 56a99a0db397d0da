"""Plain-text tables for the terminal: columns padded to their widest cell, text shown escaped."""

from __future__ import annotations

from whyclip.store import shown


def table_lines(head: tuple, rows: list[tuple]) -> list[str]:
    """The header and each row as one line, columns two spaces apart, no trailing blanks;
    control characters in a cell (a stored name) are shown escaped, never sent to the terminal."""
    head, rows = tuple(shown(str(x)) for x in head), [tuple(shown(str(x)) for x in r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    return ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in (head, *rows)]
