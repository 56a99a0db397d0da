"""Ingest jobs: run in a background thread, their state kept as small JSON files in the
data directory (``jobs/<id>.json``, replaced atomically), so every worker process and every
replica sharing the directory answers ``GET /v1/jobs/{id}`` alike.

A job whose process died (SIGKILL, a crash) is reported ``interrupted``: its library
version was never published (a version appears whole or not at all) and submitting the
file again resumes from the prompts already in the embedding cache."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from whyclip.store import WhyclipError

log = logging.getLogger(__name__)
STATES = ("queued", "running", "done", "failed", "interrupted")
HOST = socket.gethostname()
# An upload folder with no job record yet may be one another replica is validating now (the
# record is written when its request ends); past this age, no request can still be on it.
UNCLAIMED_UPLOAD_S = 15 * 60


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


INGEST_NICENESS = 10  # ingest threads yield the cores to requests (Linux: a nice value per thread)


def _lower_priority() -> None:
    """Run this ingest thread (and the threads it starts: torch's, the tokenizer's) at a
    lower CPU priority, so that explains come first while a large library is ingested."""
    if sys.platform.startswith("linux"):  # elsewhere the call would renice the whole process
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INGEST_NICENESS)
        except OSError as exc:
            log.debug("ingest thread priority unchanged: %s", exc)


class JobBoard:
    """Job records under ``folder``, and the threads that run this process's jobs."""

    def __init__(self, folder: Path, workers: int = 1):
        self.folder = folder
        self.uploads = folder / "uploads"
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, workers), thread_name_prefix="whyclip-ingest", initializer=_lower_priority
        )
        self._lock = threading.Lock()

    def upload_path(self, job_id: str, filename: str) -> Path:
        """Where a job's uploaded library file is kept while it runs (the suffix tells the reader the format)."""
        suffix = Path(filename).suffix.lower()
        return self.uploads / job_id / f"library{suffix}"

    def new_id(self) -> str:
        return uuid.uuid4().hex

    def _write(self, record: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{record['id']}.json"
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, path)

    def get(self, job_id: str) -> dict | None:
        if not job_id.isalnum() or len(job_id) > 64:
            return None
        try:
            record = json.loads((self.folder / f"{job_id}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if record["state"] in ("queued", "running") and record["host"] == HOST and not _alive(record["pid"]):
            record["state"] = "interrupted"
            record["error"] = (
                "the server stopped before this job finished; nothing was published: "
                "submit the file again (prompts already embedded come from the cache)"
            )
        return record

    def submit(self, job_id: str, library: str, run) -> dict:
        """Start ``run(progress) -> result dict`` in the background; returns the job record."""
        record = {
            "id": job_id,
            "kind": "ingest",
            "library": library,
            "state": "queued",
            "created_at": _now(),
            "started_at": None,
            "finished_at": None,
            "progress": {"done": 0, "total": 0},
            "result": None,
            "error": None,
            "host": HOST,
            "pid": os.getpid(),
        }
        self._write(record)
        self._pool.submit(self._run, dict(record), run)
        return record

    def _run(self, record: dict, run) -> None:
        record.update(state="running", started_at=_now())
        self._write(record)
        last = [0.0]

        def progress(done: int, total: int) -> None:
            record["progress"] = {"done": int(done), "total": int(total)}
            if time.monotonic() - last[0] > 0.2 or done >= total:  # a file write at most 5 times a second
                last[0] = time.monotonic()
                self._write(record)

        try:
            record.update(state="done", result=run(progress))
        except WhyclipError as exc:
            record.update(state="failed", error=str(exc))
        except Exception:
            log.exception("ingest job %s failed", record["id"])  # with its traceback
            record.update(state="failed", error=f"internal error: the server logged it with job id {record['id']}")
        finally:
            shutil.rmtree(self.uploads / record["id"], ignore_errors=True)  # gone before the job reads finished
            record["finished_at"] = _now()
            self._write(record)

    def remove_interrupted_uploads(self) -> int:
        """Remove the upload folders (``uploads/<id>/``) that no running job needs, as a
        server starts: those whose job is over (done, failed, or interrupted: its process on
        this host is gone), and those with no job record that are older than
        ``UNCLAIMED_UPLOAD_S``. A job that another process or replica runs reads
        ``queued`` or ``running`` and keeps its folder. Returns how many were removed."""
        try:
            folders = [p for p in self.uploads.iterdir() if p.is_dir()]
        except OSError:
            return 0
        removed = 0
        for folder in folders:
            record = self.get(folder.name)
            if record is not None:
                doomed = record["state"] not in ("queued", "running")
            else:
                try:
                    doomed = time.time() - folder.stat().st_mtime > UNCLAIMED_UPLOAD_S
                except OSError:
                    continue
            if doomed:
                shutil.rmtree(folder, ignore_errors=True)
                removed += not folder.exists()
        return removed

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
