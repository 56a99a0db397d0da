"""Starting an ingest job from an uploaded library file.

Before the 202, only what costs nothing whatever the file holds: the name, template,
baseline, the file's format and non-emptiness, and the index factory's syntax and absolute
bounds. Then the 202 with the job id, at once, so that no request timeout can leave a job
running that its client has no id for. The job itself reads and validates the file (a bad
file is a failed job whose error names the uploaded file, never the server's paths),
checks the index against the library's size, and then:

- publishes nothing when the library's newest version came from the same file content
  (sha256) with the same settings: it ends ``done`` with that version and a ``note``;
- publishes nothing when the library was deleted after the upload was accepted: it ends
  ``failed`` (the store checks this in the publishing transaction itself)."""

from __future__ import annotations

from pathlib import Path

from whyclip.ingest.readers import FORMATS, read_library
from whyclip.ingest.services.library_ingest import (
    IngestPlan,
    check_ingest_options,
    plan_ingest,
    run_ingest,
    same_as_newest,
)
from whyclip.store import AlreadyPublished, InputError, LibraryDeleted, LibraryInfo, check_factory
from whyclip.ui.api.dependencies import Resources
from whyclip.ui.api.error_responses import ApiError

OURS = ("Flat", "ClassIVF")


def _plan(res: Resources, path: Path, filename: str, name: str, options: dict) -> IngestPlan:
    try:
        parsed = read_library(path)
        return plan_ingest(parsed, name, res.encoder, **options)
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), filename)) from None


def _summary(info: LibraryInfo) -> dict:
    return {
        "library": info.name,
        "version": info.version,
        "n_classes": info.n_classes,
        "n_descriptors": info.n_descriptors,
        "n_prompts": info.n_prompts,
    }


def _unchanged(same: LibraryInfo, plan: IngestPlan) -> dict:
    return {
        **_summary(same),
        "n_embedded": 0,
        "n_reused": 0,
        "seconds": 0.0,
        "warnings": plan.warnings,
        "note": f"version {same.version} was built from the same file with the same settings: nothing was published",
    }


def start_ingest(res: Resources, filename: str, data: bytes, name: str, options: dict, commit_every: int) -> dict:
    """Check what needs no parsing, keep the file, and start the job: its record (202)."""
    name = check_ingest_options(name, options["template"], options["baseline"])
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise ApiError(415, f"{filename}: unknown library format {suffix!r}: send a .json, .jsonl or .csv file")
    if not data:
        raise ApiError(422, f"{filename}: empty file")
    factory = options["index_factory"]
    if factory is not None and factory not in OURS:
        check_factory(factory, res.encoder.info.dim)  # its syntax and absolute bounds, nothing allocated
    store, encoder, board = res.store, res.encoder, res.jobs
    deletions_seen = store.deletions(name)  # a delete after this moment keeps the job from publishing
    job_id = board.new_id()
    path = board.upload_path(job_id, filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)

    def run(progress) -> dict:
        if store.deletions(name) != deletions_seen:
            raise LibraryDeleted(f"library {name!r} was deleted after this upload was accepted: nothing was published")
        plan = _plan(res, path, filename, name, options)
        plan.source = f"upload:{filename}"
        plan.deletions_seen, plan.unless_same_as_newest = deletions_seen, True
        same = same_as_newest(store, plan, encoder)  # the usual case: nothing to embed
        if same is not None:
            progress(len(plan.prompts), len(plan.prompts))
            return _unchanged(same, plan)
        try:  # the store checks again when publishing: an identical upload may have run meanwhile
            report = run_ingest(store, plan, encoder, progress=progress, commit_every=commit_every)
        except AlreadyPublished as exc:
            return _unchanged(store.library(name, exc.version), plan)
        return {
            **_summary(report.info),
            "n_embedded": report.n_embedded,
            "n_reused": report.n_reused,
            "seconds": report.seconds,
            "warnings": [w.replace(str(path), filename) for w in report.warnings],  # no server path
        }

    return public(board.submit(job_id, name, run))


def public(record: dict) -> dict:
    """A job record as clients see it (no host or process id)."""
    return {k: v for k, v in record.items() if k not in ("host", "pid")}
