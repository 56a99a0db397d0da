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


@dataclass
class IngestPlan:
    """A validated library, ready to embed: prompts built, token limits checked."""

    name: str
    template: str
    baseline: str
    classes: list[DraftClass]
    source: str
    source_sha256: str
    warnings: list[str]

    @property
    def prompts(self) -> list[str]:
        """Every distinct prompt (descriptor prompts, then baseline prompts), each once."""
        return list(dict.fromkeys([p for c in self.classes for p in c.prompts] + [c.baseline_prompt for c in self.classes]))


def plan_ingest(
    source: str | Path | dict | ParsedLibrary,
    name: str,
    encoder: TextEncoder,
    *,
    template: str = DEFAULT_TEMPLATE,
    baseline: str = DEFAULT_BASELINE,
    strict: bool = False,
) -> IngestPlan:
    """Read and validate everything; raises :class:`InputError` before any work is done."""
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
    if parsed.source and Path(parsed.source).is_file():
        sha = hashlib.sha256(Path(parsed.source).read_bytes()).hexdigest()
    classes = build_prompts(parsed, tmpl, baseline)
    warnings = list(parsed.warnings)
    empty = [c.name for c in classes if not c.prompts]
    if empty:
        listed = ", ".join(empty[:MAX_LISTED]) + (" ..." if len(empty) > MAX_LISTED else "")
        warnings.append(f"{len(empty)} class(es) have no descriptors and fall back to their baseline prompt: {listed}")
    warnings += check_token_limit(classes, encoder, strict)
    return IngestPlan(name, tmpl.spec, baseline, classes, parsed.source, sha, warnings)


def run_ingest(
    store: Store, plan: IngestPlan, encoder: TextEncoder, progress: Callable[[int, int], None] | None = None
) -> IngestReport:
    """Embed every distinct prompt of ``plan`` once and publish the next library version.
    ``progress(done, total)`` is called as prompts are embedded."""
    started = time.perf_counter()
    distinct = plan.prompts
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, len(distinct))

    vectors, norms = encoder.embed_texts(distinct, progress=step)
    draft = LibraryDraft(
        name=plan.name, encoder=encoder.info, template=plan.template, baseline_template=plan.baseline,
        classes=plan.classes, prompt_rows={p: i for i, p in enumerate(distinct)}, vectors=vectors,
        norms=norms, source=plan.source, source_sha256=plan.source_sha256,
    )  # fmt: skip
    info = store.write_library(draft)
    for w in plan.warnings:
        log.warning(w)
    return IngestReport(info=info, warnings=plan.warnings, n_embedded=len(distinct), seconds=time.perf_counter() - started)


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
    distinct prompt once and publish the next version of library ``name``."""
    plan = plan_ingest(source, name, encoder, template=template, baseline=baseline, strict=strict)
    return run_ingest(store, plan, encoder, progress)
