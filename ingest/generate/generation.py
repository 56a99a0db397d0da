"""The generation job: ask the LLM for each class (through the answer cache), parse, retry
empty answers at a higher temperature, clean, and write the library with its provenance.

Requests run in rounds: every class (times ``n`` samples) first, then the ones whose answer
held no descriptor, up to ``empty_retries`` times. Each round looks its requests up in the
cache, sends the rest ``concurrency`` at a time, and stores each answer as it arrives, so an
interrupted run resumes and a finished one reruns without a request.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from whyclip.ingest.generate.classes import ClassList
from whyclip.ingest.generate.cleaning import CleaningReport, CleanSettings, clean_classes
from whyclip.ingest.generate.llm_client import ChatClient, ChatRequest, public_url, request_key
from whyclip.ingest.generate.llm_prompts import Prompt
from whyclip.ingest.generate.parsing import parse_answer
from whyclip.store import InputError, Store, answer_cache, write_text_atomic

log = logging.getLogger(__name__)
MAX_TEMPERATURE = 2.0


@dataclass(frozen=True)
class GenerateSettings:
    model: str
    prompt: Prompt
    n: int = 1
    temperature: float = 0.0
    max_tokens: int = 300
    structured: bool = False
    more: bool = False
    empty_retries: int = 2
    retry_temperature_step: float = 0.4
    concurrency: int = 4

    def retry_temperature(self, attempt: int) -> float:
        return round(min(MAX_TEMPERATURE, self.temperature + self.retry_temperature_step * attempt), 3)


@dataclass
class GenerateResult:
    classes: list[tuple[str, list[str]]]
    report: CleaningReport
    provenance: dict
    n_sent: int = 0
    n_cached: int = 0
    targets: list[str] = field(default_factory=list)


def question(settings: GenerateSettings, name: str, existing: list[str]) -> str:
    """The user message for a class; with ``--more``, the descriptors it already has come first."""
    text = settings.prompt.render(name)
    if settings.more and existing:
        listed = "; ".join(existing)
        text = f"Already listed for a {name.replace('_', ' ')}, not to be repeated: {listed}.\n\n{text}"
    return text


def generate_library(
    store: Store,
    classes: ClassList,
    client: ChatClient,
    settings: GenerateSettings,
    clean: CleanSettings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Generate descriptors for the classes that need them (all, the empty ones of a library,
    or with ``more`` all of a library's) and clean the whole library."""
    existing = classes.library or {}
    targets = [c for c in classes.names if settings.more or not existing.get(c)]
    answers: dict[str, list[dict]] = {c: [] for c in targets}
    items: dict[str, list[str]] = {c: [] for c in targets}
    prose: dict[str, list[str]] = {c: [] for c in targets}
    pending = [
        ChatRequest(
            c,
            question(settings, c, existing.get(c, [])),
            settings.temperature,
            settings.max_tokens,
            settings.structured,
            sample=s,
        )
        for c in targets
        for s in range(settings.n)
    ]
    counts = {"sent": 0, "cached": 0, "done": 0, "total": len(pending)}
    while pending:
        got = ask_round(store, client, pending, counts, settings.concurrency, progress)
        retry = []
        for req in pending:
            answer, mode, cached, key = got[req]
            parsed = parse_answer(
                answer, structured=mode == "structured", continues_bullet=settings.prompt.opens_a_bullet
            )
            items[req.class_name] += parsed.items
            prose[req.class_name] += parsed.prose
            answers[req.class_name].append(
                {
                    "sample": req.sample,
                    "attempt": req.attempt,
                    "temperature": req.temperature,
                    "request_sha256": key,
                    "mode": mode,
                    "cached": cached,
                    "answer": answer,
                }
            )
            if not parsed.items and req.attempt < settings.empty_retries:
                attempt = req.attempt + 1
                retry.append(
                    ChatRequest(
                        req.class_name,
                        req.prompt,
                        settings.retry_temperature(attempt),
                        req.max_tokens,
                        req.structured,
                        req.sample,
                        attempt,
                    )
                )
        counts["total"] += len(retry)
        pending = retry
    tries = 1 + settings.empty_retries
    empty_reasons = {
        c: (
            f"the model answered nothing ({tries} tries, temperature up to "
            f"{settings.retry_temperature(settings.empty_retries)})"
        )
        for c in targets
        if not items[c]
    }
    merged = [(c, existing.get(c, []) + items.get(c, [])) for c in classes.names]
    cleaned, report = clean_classes(merged, settings.prompt.examples, clean, prose, empty_reasons)
    provenance = {
        "generated_by": "whyclip generate",
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "base_url": public_url(client.base_url),
        "model": settings.model,
        "prompt": {"name": settings.prompt.name, "sha256": settings.prompt.sha256, "text": settings.prompt.text},
        "parameters": {
            "n": settings.n,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "structured": settings.structured,
            "more": settings.more,
            "empty_retries": settings.empty_retries,
            "retry_temperature_step": settings.retry_temperature_step,
        },
        "structured_refused": client.structured_refused,
        "requests": {"sent": counts["sent"], "cached": counts["cached"]},
        "answers": answers,
        "cleaning": report.to_json(),
    }
    return GenerateResult(cleaned, report, provenance, counts["sent"], counts["cached"], targets)


def ask_round(store, client, requests, counts, concurrency, progress) -> dict:
    """Answer ``requests`` from the cache, sending the rest ``concurrency`` at a time; each
    answer is stored as it arrives. Returns request -> (answer, mode, cached, request key)."""
    keys = {req: request_key(client.base_url, client.model, req) for req in requests}
    hits = answer_cache.lookup(store.engine, list(keys.values()))
    got = {}
    for req in requests:
        if (hit := hits.get(keys[req])) is not None:
            got[req] = (hit.answer, hit.mode, True, keys[req])
            counts["cached"] += 1
    counts["done"] += len(got)
    if progress:
        progress(counts["done"], counts["total"])
    misses = [req for req in requests if req not in got]
    if not misses:
        return got
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="whyclip-llm") as pool:
        futures = {pool.submit(client.ask, req): req for req in misses}
        not_done = set(futures)
        while not_done:
            finished, not_done = wait(not_done, return_when=FIRST_EXCEPTION)
            for fut in finished:
                exc = fut.exception()
                if exc is not None:
                    for other in not_done:
                        other.cancel()
                    raise exc
                req = futures[fut]
                answer, mode = fut.result()
                answer_cache.save(
                    store.engine,
                    [
                        answer_cache.CachedAnswer(
                            keys[req],
                            public_url(client.base_url),
                            client.model,
                            req.prompt,
                            req.parameters,
                            answer,
                            mode,
                            dt.datetime.now(dt.timezone.utc),
                        )
                    ],
                )
                got[req] = (answer, mode, False, keys[req])
                counts["sent"] += 1
                counts["done"] += 1
                if progress:
                    progress(counts["done"], counts["total"])
    return got


def provenance_path(out: str | Path) -> Path:
    """Where the provenance of a generated library goes: ``FILE.provenance.json`` beside it."""
    p = Path(out)
    return p.with_name(p.name + ".provenance.json")


def check_output(out: str | Path) -> Path:
    p = Path(out)
    if p.suffix.lower() != ".json":
        raise InputError(f"--out {out}: the generated library is written as JSON: give a path ending in .json")
    if not p.parent.is_dir():
        raise InputError(f"--out {out}: the folder {p.parent} does not exist")
    return p


def write_json_atomic(path: Path, data) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it over ``path``."""
    write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_outputs(out: Path, result: GenerateResult) -> Path:
    """The library (``{"class": [...]}`` in label order) and its provenance sidecar."""
    write_json_atomic(out, dict(result.classes))
    side = provenance_path(out)
    write_json_atomic(side, result.provenance)
    return side
