"""Labelled image sets for ``whyclip eval``: reading them and matching their labels to a
library's classes.

A dataset is a folder with one subfolder of images per class (the ImageFolder layout) or a
CSV of ``path,label`` rows (paths relative to the CSV's folder). The CSV's header row is
optional; a common one (``path,label``, ``file,class``, ``image,label``,
``filename,class_name``, ... in either order, :data:`PATH_HEADERS` and
:data:`LABEL_HEADERS`) is recognised, and a first row that looks like a header but names no
path and label column is refused, saying what it found. Labels are matched to the
library's classes exactly, then ignoring case, underscores and repeated spaces.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path

from whyclip.ingest.images import IMAGE_SUFFIXES, list_images
from whyclip.store import InputError, normalise

MAX_LISTED = 10

#: header names of a dataset CSV's path column and label column (compared lower-cased, with
#: spaces and hyphens read as underscores)
PATH_HEADERS = frozenset(
    {"path", "paths", "file", "files", "filename", "file_name", "filepath", "file_path", "image", "images", "img"}
    | {"image_path", "imagepath", "image_file", "image_filename", "image_name", "img_path", "img_file"}
)
LABEL_HEADERS = frozenset(
    {"label", "labels", "class", "classes", "class_name", "classname", "class_label", "label_name"}
    | {"category", "category_name", "target", "species"}
)
EXPECTED_HEADER = (
    "expected path,label (or another common pair such as file,class, image,label, filename,class_name, "
    "image_path,label, in either order), or no header row"
)


@dataclass
class Dataset:
    source: str
    items: list[tuple[Path, str]]  # (image file, label as written)
    found: str = ""  # a folder's: "found 12 images in 3 folders under DIR" (list_images)


def read_dataset(path: str | Path) -> Dataset:
    """A dataset folder (ImageFolder) or CSV, or :class:`InputError` naming what is wrong."""
    p = Path(path).expanduser()
    layout = "a folder with one subfolder of images per class, or a CSV of path,label rows"
    if not p.exists():
        raise InputError(f"{p}: no such dataset: give {layout}")
    if p.is_dir():
        if not any(d.is_dir() and not d.name.startswith(".") for d in p.iterdir()):
            raise InputError(f"{p}: no class subfolders: a dataset is {layout}")
        listing = list_images(p)  # the one rule: recursive, hidden skipped, sorted, bounded
        items = [(f, f.relative_to(p).parts[0]) for f in listing.files if len(f.relative_to(p).parts) > 1]
        if not listing.files:
            raise InputError(listing.summary)
        if not items:
            raise InputError(f"{p}: its images are not in class subfolders: a dataset is {layout}")
        return Dataset(str(p), items, listing.summary)
    if p.suffix.lower() != ".csv":
        raise InputError(f"{p}: not a folder or a .csv file: a dataset is {layout}")
    with open(p, newline="", encoding="utf-8-sig") as f:
        rows = [(line, row) for line, row in enumerate(csv.reader(f), start=1) if any(x.strip() for x in row)]
    path_at, label_at = 0, 1
    if rows:
        columns = header_columns(rows[0][1])
        if columns is not None:
            (path_at, label_at), rows = columns, rows[1:]
        elif _looks_like_header(p.parent, rows):
            line, row = rows[0]
            raise InputError(
                f"{p}, line {line}: found a header {','.join(row)!r} that is not a path and a label column; "
                + EXPECTED_HEADER
            )
    order = "path,label" if path_at == 0 else "label,path"
    items = []
    for line, row in rows:
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise InputError(f"{p}, line {line}: expected two fields, {order}; got {row!r}")
        items.append(((p.parent / row[path_at].strip()).resolve(), row[label_at].strip()))
    if not items:
        raise InputError(f"{p}: no {order} rows")
    return Dataset(str(p), items)


def header_columns(row: list[str]) -> tuple[int, int] | None:
    """(path column, label column) when ``row`` is a recognised header (either order), else None."""
    names = [x.strip().lower().replace(" ", "_").replace("-", "_") for x in row]
    if len(names) != 2:
        return None
    if names[0] in PATH_HEADERS and names[1] in LABEL_HEADERS:
        return 0, 1
    if names[0] in LABEL_HEADERS and names[1] in PATH_HEADERS:
        return 1, 0
    return None


def _looks_like_header(folder: Path, rows: list[tuple[int, list[str]]]) -> bool:
    """An unrecognised first row is a header when its first field is no image (no image
    suffix, no such file) while the rows after it have images there (or there are none)."""

    def image_like(field: str) -> bool:
        field = field.strip()
        return bool(field) and (Path(field).suffix.lower() in IMAGE_SUFFIXES or (folder / field).is_file())

    first = rows[0][1]
    if not first or image_like(first[0]):
        return False
    rest = [row for _, row in rows[1:5] if row]
    return not rest or any(image_like(row[0]) for row in rest)


def match_labels(labels: list[str], class_names: list[str]) -> tuple[dict[str, int], list[str]]:
    """Label -> class position (exact first, then by :func:`normalise`), and the labels
    that match no class (or several)."""
    exact = {n: i for i, n in enumerate(class_names)}
    loose: dict[str, list[int]] = {}
    for i, n in enumerate(class_names):
        loose.setdefault(normalise(n), []).append(i)
    found, unmatched = {}, []
    for label in dict.fromkeys(labels):
        if label in exact:
            found[label] = exact[label]
        elif len(loose.get(normalise(label), [])) == 1:
            found[label] = loose[normalise(label)][0]
        else:
            unmatched.append(label)
    return found, unmatched


def unmatched_error(unmatched: list[str], counts: dict[str, int], class_names: list[str], library: str) -> InputError:
    listed = []
    for label in unmatched[:MAX_LISTED]:
        close = difflib.get_close_matches(label, class_names, n=1)
        listed.append(f"{label!r} ({counts[label]} images{f', closest class {close[0]!r}' if close else ''})")
    more = f" and {len(unmatched) - MAX_LISTED} more" if len(unmatched) > MAX_LISTED else ""
    return InputError(
        f"{len(unmatched)} label(s) match no class of library {library!r}: {'; '.join(listed)}{more}; "
        "rename them to the library's class names, or pass --skip-unmatched to leave their images out"
    )
