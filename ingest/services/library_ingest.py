"""The ingest job: library file -> prompts -> CLIP vectors (each distinct prompt once)
-> a new library version in the store, published whole or not at all."""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from whyclip.ingest.embedding import settle_precision
from whyclip.ingest.encoder.legacy_ids import adopt_legacy_ids
from whyclip.ingest.readers import ParsedLibrary, parse_mapping, read_library
from whyclip.store import (
    DEFAULT_BASELINE,
    DEFAULT_TEMPLATE,
    DraftClass,
    EncoderInfo,
    InputError,
    LibraryDraft,
    LibraryInfo,
    LibraryNotFound,
    Store,
    Template,
    baseline_prompt,
    check_baseline,
    check_factory,
    check_factory_size,
    check_name,
    check_text,
    choose_factory,
    embedding_cache,
    shown,
)

log = logging.getLogger(__name__)
MAX_LISTED = 5
COMMIT_EVERY = 1024  # prompts embedded, then committed to the cache, at a time


class TextEncoder(Protocol):
    """What ingest needs from an encoder (``ClipEncoder`` or a test fake)."""

    @property
    def info(self) -> EncoderInfo: ...

    @property
    def cache_key(self) -> str: ...  # identifies the vectors it makes (weights and precision)

    @property
    def max_tokens(self) -> int: ...

    def count_tokens(self, texts: list[str]) -> list[int]: ...

    def embed_texts(
        self, texts: list[str], progress: Callable[[int], None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class IngestReport:
    info: LibraryInfo
    warnings: list[str] = field(default_factory=list)
    n_embedded: int = 0  # prompts embedded by this run
    n_reused: int = 0  # prompts found in the embedding cache
    seconds: float = 0.0


def check_library_name(name: str) -> str:
    """The store's rule for the names it keeps (:func:`whyclip.store.check_name`)."""
    return check_name(name, "library name")


def check_ingest_options(name: str, template: str = DEFAULT_TEMPLATE, baseline: str = DEFAULT_BASELINE) -> str:
    """What an ingest checks before a model loads (every surface calls this first): the
    library name, the prompt template and the baseline prompt. Returns the name."""
    name = check_library_name(name)
    check_text(template, "template")
    check_text(baseline, "baseline prompt")
    Template(template)
    check_baseline(baseline)
    return name


def check_texts(parsed: ParsedLibrary) -> None:
    """No class name or descriptor with a NUL: the database could not store it."""
    for cls, descs in parsed.classes:
        check_text(cls, "class name")
        if any("\x00" in d for d in descs):
            check_text(next(d for d in descs if "\x00" in d), f"a descriptor of class '{shown(cls)}'")


def build_prompts(parsed: ParsedLibrary, template: Template, baseline: str) -> list[DraftClass]:
    return [
        DraftClass(
            name=cls,
            baseline_prompt=baseline_prompt(baseline, cls),
            descriptors=list(descs),
            prompts=[template.build(cls, d) for d in descs],
            truncated=[False] * len(descs),
        )
        for cls, descs in parsed.classes
    ]


def check_token_limit(classes: list[DraftClass], encoder: TextEncoder, strict: bool) -> list[str]:
    """Mark prompts over the encoder's token limit; warn (they are truncated) or, strict, refuse."""
    prompts = sorted({p for c in classes for p in c.prompts} | {c.baseline_prompt for c in classes})
    too_long = {p: n for p, n in zip(prompts, encoder.count_tokens(prompts), strict=True) if n > encoder.max_tokens}
    if not too_long:
        return []
    for c in classes:
        c.truncated = [p in too_long for p in c.prompts]
    listed = "; ".join(f"{p!r} ({n} tokens)" for p, n in list(too_long.items())[:MAX_LISTED])
    more = f" and {len(too_long) - MAX_LISTED} more" if len(too_long) > MAX_LISTED else ""
    limit = encoder.max_tokens
    if strict:
        raise InputError(
            f"{len(too_long)} prompt(s) exceed CLIP's {limit}-token limit: {listed}{more}; shorten them or "
            "drop --strict"
        )
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
    index_factory: str | None = None
    deletions_seen: int | None = None  # see LibraryDraft.deletions_seen: set it when the work is accepted
    unless_same_as_newest: bool = False  # see LibraryDraft.unless_same_as_newest

    @property
    def prompts(self) -> list[str]:
        """Every distinct prompt (descriptor prompts, then baseline prompts), each once."""
        return list(
            dict.fromkeys([p for c in self.classes for p in c.prompts] + [c.baseline_prompt for c in self.classes])
        )


def plan_ingest(
    source: str | Path | dict | ParsedLibrary,
    name: str,
    encoder: TextEncoder,
    *,
    template: str = DEFAULT_TEMPLATE,
    baseline: str = DEFAULT_BASELINE,
    strict: bool = False,
    index_factory: str | None = None,
) -> IngestPlan:
    """Read and validate everything; raises :class:`InputError` before any work is done.
    Warnings are logged here, before the embedding (and its progress bar) starts; the
    source file is recorded by its absolute path."""
    name = check_ingest_options(name, template, baseline)
    if index_factory is not None:
        check_factory(index_factory, encoder.info.dim)
    tmpl = Template(template)
    sha = ""
    if isinstance(source, ParsedLibrary):
        parsed = source
    elif isinstance(source, dict):
        parsed = parse_mapping(source)
    else:
        parsed = read_library(source)
    if parsed.source and Path(parsed.source).is_file():
        sha = hashlib.sha256(Path(parsed.source).read_bytes()).hexdigest()
    check_texts(parsed)
    classes = build_prompts(parsed, tmpl, baseline)
    if index_factory is not None and index_factory not in ("Flat", "ClassIVF"):  # before anything is allocated
        check_factory_size(index_factory, sum(len(c.prompts) for c in classes), encoder.info.dim)
    warnings = list(parsed.warnings)
    empty = [c.name for c in classes if not c.prompts]
    if empty:
        listed = ", ".join(empty[:MAX_LISTED]) + (" ..." if len(empty) > MAX_LISTED else "")
        warnings.append(f"{len(empty)} class(es) have no descriptors and fall back to their baseline prompt: {listed}")
    warnings += check_token_limit(classes, encoder, strict)
    for w in warnings:  # now, before any progress bar starts
        log.warning(w)
    source_path = (
        str(Path(parsed.source).resolve()) if parsed.source and Path(parsed.source).exists() else parsed.source
    )
    return IngestPlan(name, tmpl.spec, baseline, classes, source_path, sha, warnings, index_factory)


def same_as_newest(store: Store, plan: IngestPlan, encoder: TextEncoder) -> LibraryInfo | None:
    """The newest version of ``plan``'s library when it was built from the same content
    (the source file's sha256, never its path) with the same settings (template, baseline,
    encoder and retrieval index), else None: publishing the plan would only duplicate it."""
    if not plan.source_sha256:
        return None
    try:
        newest = store.library(plan.name)
    except LibraryNotFound:
        return None
    n_descriptors = sum(len(c.prompts) for c in plan.classes)
    same = (
        newest.source_sha256 == plan.source_sha256
        and newest.template == plan.template
        and newest.baseline_template == plan.baseline
        and newest.encoder_id == encoder.info.id
        and newest.index_factory == choose_factory(n_descriptors, plan.index_factory, encoder.info.dim)
    )
    return newest if same else None


LOOKUP_SLICE = 65_536  # prompts looked up in the cache at a time (their vectors in memory at once)
IN_MEMORY_BYTES = 2 << 30  # a version's vectors above this go to a temporary file, not RAM


def _version_arrays(store: Store, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Room for one vector and norm per distinct prompt: in memory, or above
    ``IN_MEMORY_BYTES`` in an unnamed temporary file beside the store (gone when the
    arrays are), so a ten-million-prompt library needs no 20 GB of RAM."""
    if n * dim * 4 <= IN_MEMORY_BYTES:
        return np.zeros((n, dim), np.float32), np.zeros(n, np.float32)
    home = getattr(store, "home", None)
    with tempfile.TemporaryFile(dir=home if home is not None and Path(home).is_dir() else None) as file:
        file.truncate(n * dim * 4)
        vectors = np.memmap(file, dtype=np.float32, mode="r+", shape=(n, dim))
    return vectors, np.zeros(n, np.float32)


def _fill_from_cache(store: Store, key: str, distinct: list[str], vectors: np.ndarray, norms: np.ndarray) -> list[str]:
    """Write what the cache holds under ``key`` into the rows of ``distinct`` (a slice of
    prompts at a time, so the lookup never holds every vector); returns the prompts it lacks."""
    missing: list[str] = []
    for start in range(0, len(distinct), LOOKUP_SLICE):
        part = distinct[start : start + LOOKUP_SLICE]
        found = embedding_cache.lookup(store.engine, key, part)
        for i, p in enumerate(part, start):
            hit = found.get(p)
            if hit is None:
                missing.append(p)
            else:
                vectors[i], norms[i] = hit
    return missing


def embed_chunks(encoder, chunks: list[list[str]]) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """(texts, unit vectors, norms) per chunk: the encoder's own chunked embedding where it
    has one (on a Ray cluster: :class:`whyclip.ingest.cluster.ClusterEncoder`, chunks in the
    order they finish), else one ``embed_texts`` call per chunk, in order."""
    remote = getattr(encoder, "embed_text_chunks", None)
    if remote is not None:
        yield from remote(chunks)
        return
    for chunk in chunks:
        yield (chunk, *encoder.embed_texts(chunk))


def run_ingest(
    store: Store,
    plan: IngestPlan,
    encoder: TextEncoder,
    progress: Callable[[int, int], None] | None = None,
    commit_every: int = COMMIT_EVERY,
) -> IngestReport:
    """Embed the prompts of ``plan`` that the cache lacks, ``commit_every`` at a time (each
    batch committed to the cache, so an interrupted run resumes where it stopped), then
    publish the next library version. ``progress(done, total)`` counts distinct prompts."""
    (report,) = run_ingests(store, [plan], encoder, progress, commit_every)
    return report


@dataclass
class _Pending:
    """One plan of :func:`run_ingests` between its cache lookup and its publication."""

    plan: IngestPlan
    rows: dict[str, int]
    vectors: np.ndarray
    norms: np.ndarray
    missing: list[str]  # what the cache lacked, in chunks of this plan or of an earlier one
    own: int = 0  # prompts this plan's own chunks embed
    waiting: set[str] = field(default_factory=set)
    started: float = 0.0


def run_ingests(
    store: Store,
    plans: list[IngestPlan],
    encoder: TextEncoder,
    progress: Callable[[int, int], None] | None = None,
    commit_every: int = COMMIT_EVERY,
) -> Iterator[IngestReport]:
    """:func:`run_ingest` for several plans in one stream of chunks, each plan published
    (and its report yielded) in order once its prompts are in: on a Ray cluster one actor
    pool serves them all. The chunks are the ones plan after plan would make (a prompt of
    two plans is embedded by the first and found by the second), so what is stored is the
    same. ``progress(done, total)`` counts the plans' distinct prompts together."""
    started = time.perf_counter()
    adopt_legacy_ids(store, encoder)  # vectors cached under this encoder's old id count
    pending = []
    for plan in plans:
        distinct = plan.prompts
        vectors, norms = _version_arrays(store, len(distinct), encoder.info.dim)
        rows = {p: i for i, p in enumerate(distinct)}
        missing = _fill_from_cache(store, encoder.cache_key, distinct, vectors, norms)
        pending.append(_Pending(plan, rows, vectors, norms, missing, started=started))
    first = next((job.missing for job in pending if job.missing), [])
    if first:  # a sample spread from the shortest prompt to the longest
        by_length = np.argsort(encoder.count_tokens(first), kind="stable")
        sample = [first[i] for i in by_length[np.linspace(0, len(first) - 1, min(16, len(first))).astype(int)]]
        if settle_precision(encoder, "text", sample):  # fell back to fp32: look up under its key
            for job in pending:
                job.missing = _fill_from_cache(store, encoder.cache_key, job.plan.prompts, job.vectors, job.norms)
    chunks: list[list[str]] = []
    planned: set[str] = set()
    for job in pending:
        # Sorted, prompts that share a start (a class's prompts under the paper's template)
        # land in the same batch, where the encoder computes the shared start once; the
        # encoder sorts each batch by length itself.
        own = sorted(p for p in job.missing if p not in planned)
        chunks += [own[i : i + commit_every] for i in range(0, len(own), max(1, commit_every))]
        planned.update(own)
        job.own, job.waiting = len(own), set(job.missing)
    total = sum(len(job.rows) for job in pending)
    done = total - len(planned)
    if progress:
        progress(done, total)
    saving = 0.0
    queue = deque(pending)  # the plans not yet published, in order
    del pending

    def ready() -> Iterator[IngestReport]:
        while queue and not queue[0].waiting:  # published, its arrays go
            yield _publish(store, queue.popleft(), encoder, saving)

    yield from ready()
    for batch, batch_vectors, batch_norms in embed_chunks(encoder, chunks):
        t = time.perf_counter()
        embedding_cache.save(store.engine, encoder.cache_key, batch, batch_vectors, batch_norms)
        saving += time.perf_counter() - t
        for job in queue:
            hits = [k for k, p in enumerate(batch) if p in job.waiting]
            if hits:
                at = [job.rows[batch[k]] for k in hits]
                job.vectors[at], job.norms[at] = batch_vectors[hits], batch_norms[hits]
                job.waiting.difference_update(batch[k] for k in hits)
        done += len(batch)
        if progress:
            progress(done, total)
        yield from ready()
    assert not queue, "every plan's prompts came back"


def _publish(store: Store, job: _Pending, encoder: TextEncoder, saving: float) -> IngestReport:
    """Write one plan's version, its prompts all in."""
    plan = job.plan
    embedded = time.perf_counter()
    draft = LibraryDraft(
        name=plan.name,
        encoder=encoder.info,
        template=plan.template,
        baseline_template=plan.baseline,
        classes=plan.classes,
        prompt_rows=job.rows,
        vectors=job.vectors,
        norms=job.norms,
        source=plan.source,
        source_sha256=plan.source_sha256,
        index_factory=plan.index_factory,
        deletions_seen=plan.deletions_seen,
        unless_same_as_newest=plan.unless_same_as_newest,
    )
    info = store.write_library(draft)
    describe = getattr(encoder, "describe_work", None)
    log.info(
        "embedded %d prompts in %.2fs (cache writes %.2fs so far), wrote the library in %.2fs%s",
        job.own,
        embedded - job.started,
        saving,
        time.perf_counter() - embedded,
        f"; {describe()}" if describe else "",
    )
    return IngestReport(
        info=info,
        warnings=plan.warnings,
        n_embedded=job.own,
        n_reused=len(job.rows) - job.own,
        seconds=time.perf_counter() - job.started,
    )


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
    commit_every: int = COMMIT_EVERY,
    index_factory: str | None = None,
) -> IngestReport:
    """Read ``source`` (a file, a ``{"class": [...]}`` dict or a parsed library), embed every
    distinct prompt not yet in the cache once, and publish the next version of ``name``."""
    plan = plan_ingest(
        source, name, encoder, template=template, baseline=baseline, strict=strict, index_factory=index_factory
    )
    return run_ingest(store, plan, encoder, progress, commit_every)
