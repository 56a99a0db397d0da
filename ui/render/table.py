"""Plain-text tables for the terminal: columns padded to their widest cell, text shown escaped,
and, given a width, long text cut with "..." until the table fits."""

from __future__ import annotations

from collections.abc import Mapping

from whyclip.store import shown

MIN_CUT = 6  # a cut column keeps at least this many characters (or its header's)
CUT = "..."


def table_lines(
    head: tuple, rows: list[tuple], width: int | None = None, cut: Mapping[str, str] | None = None
) -> list[str]:
    """The header and each row as one line, columns two spaces apart, no trailing blanks;
    control characters in a cell (a stored name) are shown escaped, never sent to the terminal.

    With ``width``, the columns named in ``cut`` (header -> "end": keep the start of the text,
    or "start": keep its end, as for a path) are narrowed, the widest first, and their long
    cells cut with "..." until the lines fit ``width`` or every such column is at its minimum."""
    head, rows = tuple(shown(str(x)) for x in head), [tuple(shown(str(x)) for x in r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    cut = cut or {}
    keep = {i: cut[h] for i, h in enumerate(head) if h in cut}
    if width is not None and keep:
        widths = _narrowed(widths, head, keep, width)
        rows = [tuple(_cut(x, widths[i], keep[i]) if i in keep else x for i, x in enumerate(r)) for r in rows]
    return ["  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)).rstrip() for r in (head, *rows)]


def _narrowed(widths: list[int], head: tuple, keep: Mapping[int, str], width: int) -> list[int]:
    widths = list(widths)
    floor = {i: max(MIN_CUT, len(head[i])) for i in keep}
    while (over := sum(widths) + 2 * (len(widths) - 1) - width) > 0:
        wide = [i for i in keep if widths[i] > floor[i]]
        if not wide:
            break
        i = max(wide, key=lambda j: widths[j] - floor[j])
        others = max((widths[j] for j in wide if j != i), default=floor[i])  # cut down to the next widest first
        widths[i] = max(floor[i], widths[i] - over, min(others, widths[i] - 1))
    return widths


def _cut(text: str, width: int, keep: str) -> str:
    if len(text) <= width:
        return text
    return text[: width - len(CUT)] + CUT if keep == "end" else CUT + text[len(text) - width + len(CUT) :]
