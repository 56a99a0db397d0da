"""Read descriptor libraries: the paper's JSON, JSON Lines and CSV.

Every error names the file, the key or line, and the problem. Class order is label order:
key order for JSON, first appearance for JSONL and CSV.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from whyclip.store import InputError

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass
class ParsedLibrary:
    """Classes in label order, each with its distinct descriptors, plus reader warnings."""

    classes: list[tuple[str, list[str]]]
    source: str = ""
    warnings: list[str] = field(default_factory=list)


def read_library(path: str | Path) -> ParsedLibrary:
    """Read a library file; the format follows the extension (.json, .jsonl/.ndjson, .csv)."""
    return _collect(Path(path), read_entries(path))


def read_entries(path: str | Path) -> list[tuple[str, str | None, str]]:
    """A library file's (class, descriptor or None, where) entries as written, duplicates and
    empty descriptors included (``whyclip clean`` reports them; :func:`read_library` drops them)."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"{p}: unknown library format {p.suffix!r}: use .json, .jsonl or .csv")
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{p}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}): save the file as UTF-8"
        ) from None
    reader = {"json": _read_json, "jsonl": _read_jsonl, "csv": _read_csv}[fmt]
    return reader(p, text)


def parse_mapping(mapping: dict, source: str = "<dict>") -> ParsedLibrary:
    """A library from an in-memory ``{"class": ["descriptor", ...]}`` mapping."""
    if not isinstance(mapping, dict):
        raise InputError(f"{source}: a library is an object mapping class names to descriptor lists")
    return _collect(Path(source), _entries_from_pairs(Path(source), list(mapping.items())))


def _read_json(p: Path, text: str) -> list[tuple[str, str | None, str]]:
    try:
        pairs = json.loads(text, object_pairs_hook=lambda kv: kv)
    except json.JSONDecodeError as exc:
        truncated = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        hint = ": the file looks truncated" if truncated else ""
        raise InputError(f"{p}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno}){hint}") from None
    if not isinstance(pairs, list) or (pairs and not isinstance(pairs[0], tuple)):
        raise InputError(f'{p}: the top level must be an object {{"class": ["descriptor", ...]}}')
    return _entries_from_pairs(p, pairs)


def _entries_from_pairs(p: Path, pairs: list) -> list[tuple[str, str | None, str]]:
    entries: list[tuple[str, str | None, str]] = []
    seen: set[str] = set()
    for key, value in pairs:
        where = f"class {key!r}"
        if key in seen:
            raise InputError(f"{p}: duplicate class {key!r}: merge its descriptors into one entry")
        seen.add(key)
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            raise InputError(f"{p}: {where}: descriptors must be a list of strings, found an object")
        if not isinstance(value, list):
            raise InputError(f"{p}: {where}: descriptors must be a list of strings, found {type(value).__name__}")
        entries.append((key, None, where))
        for i, d in enumerate(value):
            if not isinstance(d, str):
                raise InputError(f"{p}: {where}, descriptor {i}: not a string ({json.dumps(d)[:40]})")
            entries.append((key, d, where))
    return entries


def _read_jsonl(p: Path, text: str) -> list[tuple[str, str | None, str]]:
    entries = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: {where}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or "class" not in obj:
            raise InputError(f'{p}: {where}: expected an object {{"class": ..., "descriptor": ...}}')
        cls, desc = obj["class"], obj.get("descriptor")
        if not isinstance(cls, str):
            raise InputError(f"{p}: {where}: class must be a string")
        if desc is not None and not isinstance(desc, str):
            raise InputError(f"{p}: {where}: descriptor must be a string")
        entries.append((cls, desc, where))
    return entries


def _read_csv(p: Path, text: str) -> list[tuple[str, str | None, str]]:
    rows = csv.reader(io.StringIO(text, newline=""))
    header = next(rows, None)
    if header is None or [h.strip().lower() for h in header[:2]] != ["class", "descriptor"]:
        if header is None:
            found = "an empty file"
        elif not any(h.strip() for h in header):
            found = "an empty line"
        else:
            found = repr(",".join(header)[:80])
        raise InputError(
            f"{p}: line 1: the header must be 'class,descriptor' (one class and one descriptor a row), found {found}"
        )
    entries = []
    for n, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < 2:
            row = [*row, ""]
        entries.append((row[0], row[1] if row[1].strip() else None, f"line {n}"))
    return entries


def _collect(p: Path, entries: list[tuple[str, str | None, str]]) -> ParsedLibrary:
    """Group (class, descriptor) entries in first-seen order; reject empty class names,
    drop empty and duplicate descriptors with a warning. Linear: a class's descriptors are
    looked up in a hash set, never scanned (a million in one class validate in seconds)."""
    classes: dict[str, dict[str, None]] = {}  # an insertion-ordered set per class: linear in the entries
    warnings: list[str] = []
    for cls, desc, where in entries:
        if not cls.strip():
            raise InputError(f"{p}: {where}: empty class name")
        descs = classes.setdefault(cls, {})
        if desc is None:
            continue
        if not desc.strip():
            warnings.append(f"{p}: {where}: empty descriptor in class {cls!r} dropped")
        elif desc in descs:
            warnings.append(f"{p}: {where}: duplicate descriptor {desc!r} in class {cls!r} dropped")
        else:
            descs[desc] = None
    if not classes:
        raise InputError(f"{p}: the library has no classes")
    return ParsedLibrary(classes=[(c, list(d)) for c, d in classes.items()], source=str(p), warnings=warnings)
