"""Read the CLASSES argument of ``whyclip generate``: a text file (one class a line), a JSON
list of names, a CSV (the first column; a header "class" or "name" is skipped), or an existing
library (.json object, .jsonl, or a CSV with the header ``class,descriptor``), whose
descriptors are kept and whose empty classes are filled."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from whyclip.ingest.readers import read_entries
from whyclip.store import InputError


@dataclass
class ClassList:
    """Class names in order; ``library`` holds the descriptors when CLASSES was a library."""

    names: list[str]
    library: dict[str, list[str]] | None = None
    warnings: list[str] = field(default_factory=list)


def read_raw_library(path: str | Path) -> list[tuple[str, list[str]]]:
    """A library's classes in label order with their lines as written (duplicates kept,
    blank lines dropped), for cleaning."""
    classes: dict[str, list[str]] = {}
    for cls, desc, where in read_entries(path):
        if not cls.strip():
            raise InputError(f"{path}: {where}: empty class name")
        lines = classes.setdefault(cls, [])
        if desc is not None and desc.strip():
            lines.append(desc)
    if not classes:
        raise InputError(f"{path}: the library has no classes")
    return list(classes.items())


def _text(p: Path) -> str:
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        return p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{p}: not valid UTF-8: save the file as UTF-8") from None


def _is_library_csv(text: str) -> bool:
    header = next(csv.reader(io.StringIO(text)), [])
    return [h.strip().lower() for h in header[:2]] == ["class", "descriptor"]


def read_classes(path: str | Path) -> ClassList:
    """The classes to generate for (see the module docstring); names are stripped, repeats dropped with a warning."""
    p = Path(path)
    text = _text(p)
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson") or (suffix == ".csv" and _is_library_csv(text)):
        return _from_library(read_raw_library(p))
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})") from None
        if isinstance(data, dict):
            return _from_library(read_raw_library(p))
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise InputError(f'{p}: expected a JSON list of class names ["tench", ...] or a library {{"class": [...]}}')
        names = data
    elif suffix == ".csv":
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row and row[0].strip()]
        if rows and rows[0][0].strip().lower() in ("class", "name", "label"):
            rows = rows[1:]
        names = [row[0] for row in rows]
    else:
        names = text.splitlines()
    return _unique(p, names)


def _unique(p: Path, names: list[str]) -> ClassList:
    out: list[str] = []
    warnings: list[str] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        if name in out:
            warnings.append(f"{p}: class {name!r} is listed twice: generated once")
        else:
            out.append(name)
    if not out:
        raise InputError(f"{p}: no class names: write one class a line")
    return ClassList(out, None, warnings)


def _from_library(classes: list[tuple[str, list[str]]]) -> ClassList:
    return ClassList([name for name, _ in classes], dict(classes))
