"""Plain-text tables for the terminal: columns padded to their widest cell."""

from __future__ import annotations


def table_lines(head: tuple, rows: list[tuple]) -> list[str]:
    """The header and each row as one line, columns two spaces apart, no trailing blanks."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    return ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in (head, *rows)]
