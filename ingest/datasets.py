"""Labelled image sets for ``whyclip eval``: reading them and matching their labels to a
library's classes.

A dataset is a folder with one subfolder of images per class (the ImageFolder layout) or a
CSV of ``path,label`` rows (paths relative to the CSV's folder). Labels are matched to the
library's classes exactly, then ignoring case, underscores and repeated spaces.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path

from whyclip.ingest.images import IMAGE_SUFFIXES
from whyclip.store import InputError, normalise

MAX_LISTED = 10


@dataclass
class Dataset:
    source: str
    items: list[tuple[Path, str]]  # (image file, label as written)


def read_dataset(path: str | Path) -> Dataset:
    """A dataset folder (ImageFolder) or CSV, or :class:`InputError` naming what is wrong."""
    p = Path(path).expanduser()
    layout = "a folder with one subfolder of images per class, or a CSV of path,label rows"
    if not p.exists():
        raise InputError(f"{p}: no such dataset: give {layout}")
    if p.is_dir():
        classes = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise InputError(f"{p}: no class subfolders: a dataset is {layout}")
        items = [
            (f, d.name)
            for d in classes
            for f in sorted(d.rglob("*"))
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        ]
        if not items:
            raise InputError(f"{p}: its class subfolders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return Dataset(str(p), items)
    if p.suffix.lower() != ".csv":
        raise InputError(f"{p}: not a folder or a .csv file: a dataset is {layout}")
    items = []
    with open(p, newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or all(not x.strip() for x in row):
                continue
            if line == 1 and [x.strip().lower() for x in row] == ["path", "label"]:
                continue
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise InputError(f"{p}, line {line}: expected two fields, path,label; got {row!r}")
            items.append(((p.parent / row[0].strip()).resolve(), row[1].strip()))
    if not items:
        raise InputError(f"{p}: no path,label rows")
    return Dataset(str(p), items)


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
