"""GET /v1/jobs/{id}: an ingest job's state, progress, result or error."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whyclip.ui.api.dependencies import ResourcesDep, read_access
from whyclip.ui.api.error_responses import ERROR_RESPONSES, ApiError
from whyclip.ui.api.routes.ingest_job import public
from whyclip.ui.api.schemas import JobOut

router = APIRouter(tags=["jobs"], dependencies=[Depends(read_access)], responses=ERROR_RESPONSES)


@router.get("/v1/jobs/{job_id}", response_model=None, responses={200: {"model": JobOut}})
async def job(res: ResourcesDep, job_id: str) -> JSONResponse:
    """Progress counts distinct prompts (those found in the cache count as done at once)."""
    record = await run_in_threadpool(lambda: res.jobs.get(job_id))
    if record is None:
        raise ApiError(404, f"no job {job_id!r} (jobs are kept in the data directory of the server that took them)")
    return JSONResponse(public(record))
