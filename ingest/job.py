"""The ingest job: library file -> prompts -> CLIP vectors (each distinct prompt once)
-> a new library version in the store, published whole or not at all."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from store import DraftClass, EncoderInfo, LibraryDraft, LibraryInfo, Store
from store.errors import InputError

from .prompts import DEFAULT_BASELINE, DEFAULT_TEMPLATE, Template, baseline_prompt, check_baseline
from .readers import ParsedLibrary, parse_mapping, read_library

log = logging.getLogger(__name__)
MAX_LISTED = 5


class TextEncoder(Protocol):
    """What ingest needs from an encoder (``ClipEncoder`` or a test fake)."""

    info: EncoderInfo
    max_tokens: int

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def embed_texts(self, texts: list[str], progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class IngestReport:
    info: LibraryInfo
    warnings: list[str] = field(default_factory=list)
    n_embedded: int = 0
    seconds: float = 0.0


def check_library_name(name: str) -> str:
    name = name.strip() if isinstance(name, str) else ""
    if not name or len(name) > 200 or any(ch in name for ch in "\n\r\t/\\"):
        raise InputError(f"library name {name!r} is not valid: use 1-200 characters without slashes or newlines")
    return name


def build_prompts(parsed: ParsedLibrary, template: Template, baseline: str) -> list[DraftClass]:
    return [
        DraftClass(name=cls, baseline_prompt=baseline_prompt(baseline, cls), descriptors=list(descs),
                   prompts=[template.build(cls, d) for d in descs], truncated=[False] * len(descs))
        for cls, descs in parsed.classes
    ]  # fmt: skip


def check_token_limit(classes: list[DraftClass], encoder: TextEncoder, strict: bool) -> list[str]:
    """Mark prompts over the encoder's token limit; warn (they are truncated) or, strict, refuse."""
    prompts = sorted({p for c in classes for p in c.prompts} | {c.baseline_prompt for c in classes})
    too_long = {p: n for p, n in zip(prompts, encoder.count_tokens(prompts)) if n > encoder.max_tokens}
    if not too_long:
        return []
    for c in classes:
        c.truncated = [p in too_long for p in c.prompts]
    listed = "; ".join(f"{p!r} ({n} tokens)" for p, n in list(too_long.items())[:MAX_LISTED])
    more = f" and {len(too_long) - MAX_LISTED} more" if len(too_long) > MAX_LISTED else ""
    limit = encoder.max_tokens
    if strict:
        raise InputError(f"{len(too_long)} prompt(s) exceed CLIP's {limit}-token limit: {listed}{more}; shorten them or drop --strict")
    return [f"{len(too_long)} prompt(s) exceed CLIP's {limit}-token limit and were truncated: {listed}{more}"]


def ingest_library(
    store: Store,
    source: str | Path | dict | ParsedLibrary,
    name: str,
    encoder: TextEncoder,
    *,
    template: str = DEFAULT_TEMPLATE,
    baseline: str = DEFAULT_BASELINE,
    strict: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> IngestReport:
    """Read ``source`` (a file, a ``{"class": [...]}`` dict or a parsed library), embed every
    distinct prompt once and publish the next version of library ``name``.

    ``progress(done, total)`` is called as prompts are embedded. Everything is validated
    before anything is embedded or written.
    """
    started = time.perf_counter()
    name = check_library_name(name)
    tmpl = Template(template)
    check_baseline(baseline)
    sha = ""
    if isinstance(source, ParsedLibrary):
        parsed = source
    elif isinstance(source, dict):
        parsed = parse_mapping(source)
    else:
        parsed = read_library(source)
        sha = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    classes = build_prompts(parsed, tmpl, baseline)
    warnings = list(parsed.warnings)
    empty = [c.name for c in classes if not c.prompts]
    if empty:
        warnings.append(f"{len(empty)} class(es) have no descriptors and fall back to their baseline prompt: {', '.join(empty[:MAX_LISTED])}{' ...' if len(empty) > MAX_LISTED else ''}")
    warnings += check_token_limit(classes, encoder, strict)

    distinct = list(dict.fromkeys([p for c in classes for p in c.prompts] + [c.baseline_prompt for c in classes]))
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(distinct))

    vectors, norms = encoder.embed_texts(distinct, progress=step)
    draft = LibraryDraft(
        name=name, encoder=encoder.info, template=tmpl.spec, baseline_template=baseline, classes=classes,
        prompt_rows={p: i for i, p in enumerate(distinct)}, vectors=vectors, norms=norms,
        source=parsed.source, source_sha256=sha,
    )  # fmt: skip
    info = store.write_library(draft)
    for w in warnings:
        log.warning(w)
    return IngestReport(info=info, warnings=warnings, n_embedded=len(distinct), seconds=time.perf_counter() - started)
