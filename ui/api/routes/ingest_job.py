"""Starting an ingest job from an uploaded library file: everything is validated before
the 202 (a bad file, name or option is a 422 at once), then the embedding runs in the
background. Messages name the uploaded file, never the server's paths."""

from __future__ import annotations

import shutil
from pathlib import Path

from whyclip.ingest.readers import FORMATS, read_library
from whyclip.ingest.services.library_ingest import check_ingest_options, plan_ingest, run_ingest
from whyclip.store import InputError
from whyclip.ui.api.dependencies import Resources
from whyclip.ui.api.error_responses import ApiError


def _plan(res: Resources, path: Path, filename: str, name: str, options: dict):
    try:
        parsed = read_library(path)
        return plan_ingest(parsed, name, res.encoder, **options)
    except InputError as exc:
        raise InputError(str(exc).replace(str(path), filename)) from None


def start_ingest(res: Resources, filename: str, data: bytes, name: str, options: dict, commit_every: int) -> dict:
    check_ingest_options(name, options["template"], options["baseline"])
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise ApiError(415, f"{filename}: unknown library format {suffix!r}: send a .json, .jsonl or .csv file")
    if not data:
        raise ApiError(422, f"{filename}: empty file")
    board = res.jobs
    job_id = board.new_id()
    path = board.upload_path(job_id, filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        plan = _plan(res, path, filename, name, options)
    except BaseException:
        shutil.rmtree(path.parent, ignore_errors=True)
        raise
    plan.source = f"upload:{filename}"
    store, encoder = res.store, res.encoder

    def run(progress) -> dict:
        report = run_ingest(store, plan, encoder, progress=progress, commit_every=commit_every)
        i = report.info
        return {
            "library": i.name,
            "version": i.version,
            "n_classes": i.n_classes,
            "n_descriptors": i.n_descriptors,
            "n_prompts": i.n_prompts,
            "n_embedded": report.n_embedded,
            "n_reused": report.n_reused,
            "seconds": report.seconds,
            "warnings": [w.replace(str(path), filename) for w in report.warnings],  # no server path
        }

    return public(board.submit(job_id, plan.name, run))


def public(record: dict) -> dict:
    """A job record as clients see it (no host or process id)."""
    return {k: v for k, v in record.items() if k not in ("host", "pid")}
