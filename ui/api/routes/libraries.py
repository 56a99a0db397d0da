"""/v1/libraries: list, versions, paged classes and descriptors, upload (an ingest job), delete."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whyclip.store import browse
from whyclip.ui.api import library_admin
from whyclip.ui.api.dependencies import Resources, ResourcesDep, read_access, write_access
from whyclip.ui.api.error_responses import ERROR_RESPONSES
from whyclip.ui.api.routes.common import info_dict
from whyclip.ui.api.routes.ingest_job import start_ingest
from whyclip.ui.api.schemas import DeletedOut, JobOut, LibraryOut, LibraryVersionsOut, PageOut
from whyclip.ui.api.uploads import multipart_body, read_upload

router = APIRouter(tags=["libraries"], responses=ERROR_RESPONSES)
reads = [Depends(read_access)]
writes = [Depends(write_access)]
multipart_writes = [*writes, Depends(multipart_body)]  # the key first, then the content type
MAX_VERSION = 2**31 - 1  # versions are 32-bit integers in every database whyclip supports
Version = Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="Library version [default: newest]")]
Search = Annotated[str, Query(max_length=200, description="Case-insensitive substring of class, descriptor or prompt")]
Offset = Annotated[int, Query(ge=0, le=100_000_000)]
Limit = Annotated[int, Query(ge=1, le=500)]
CLASS_ORDER = {k.replace(" ", "_"): k for k in browse.CLASS_ORDERS}
DESCRIPTOR_ORDER = {k.lower().replace(" (a-z)", "").replace(" ", "_"): k for k in browse.DESCRIPTOR_ORDERS}
# The same names spelled out, so that type checkers read them too
ClassOrder = Literal["label_order", "class_name", "fewest_descriptors", "most_descriptors"]
DescriptorOrder = Literal["label_order", "descriptor", "most_shared_first"]
assert list(get_args(ClassOrder)) == list(CLASS_ORDER), "ClassOrder lags the store's class orders"
assert list(get_args(DescriptorOrder)) == list(DESCRIPTOR_ORDER), "DescriptorOrder lags the store's descriptor orders"
# "descriptor_(A-Z)": what 0.1.0 accepted for A-Z order by mistake; still accepted, not documented
LEGACY_DESCRIPTOR_ORDER = "descriptor_(A-Z)"
DESCRIPTOR_ORDER[LEGACY_DESCRIPTOR_ORDER] = DESCRIPTOR_ORDER["descriptor"]


def _snake(row: dict) -> dict:
    return {k.replace(" ", "_"): v for k, v in row.items()}


@router.get("/v1/libraries", dependencies=reads, response_model=None, responses={200: {"model": list[LibraryOut]}})
async def list_libraries(res: ResourcesDep) -> JSONResponse:
    """The newest ready version of every library."""
    infos = await run_in_threadpool(lambda: res.store.libraries())
    return JSONResponse([info_dict(i) for i in infos])


@router.get(
    "/v1/libraries/{name}", dependencies=reads, response_model=None, responses={200: {"model": LibraryVersionsOut}}
)
async def library_versions(res: ResourcesDep, name: str) -> JSONResponse:
    """A library's metadata, every ready version (newest first)."""
    infos = await run_in_threadpool(library_admin.library_versions, res.store, name)
    return JSONResponse({"name": name, "versions": [info_dict(i) for i in infos]})


def _page(
    res: Resources, name: str, version: int | None, count, page, search: str, order: str, offset: int, limit: int
) -> dict:
    info = res.store.library(name, version)
    items = page(res.store.engine, info, search, order, offset, limit)
    return {
        "library": info.name,
        "version": info.version,
        "total": count(res.store.engine, info, search),
        "offset": offset,
        "limit": limit,
        "items": [_snake(r) for r in items],
    }


@router.get(
    "/v1/libraries/{name}/classes", dependencies=reads, response_model=None, responses={200: {"model": PageOut}}
)
async def library_classes(
    res: ResourcesDep,
    name: str,
    version: Version = None,
    search: Search = "",
    order: ClassOrder = "label_order",
    offset: Offset = 0,
    limit: Limit = 50,
) -> JSONResponse:
    """One page of a version's classes, searchable by name."""
    body = await run_in_threadpool(
        _page, res, name, version, browse.count_classes, browse.classes_page, search, CLASS_ORDER[order], offset, limit
    )
    return JSONResponse(body)


@router.get(
    "/v1/libraries/{name}/descriptors", dependencies=reads, response_model=None, responses={200: {"model": PageOut}}
)
async def library_descriptors(
    res: ResourcesDep,
    name: str,
    version: Version = None,
    search: Search = "",
    order: Annotated[
        DescriptorOrder | Literal["descriptor_(A-Z)"],
        Query(description="label_order, descriptor (A-Z) or most_shared_first"),
    ] = "label_order",
    offset: Offset = 0,
    limit: Limit = 50,
) -> JSONResponse:
    """One page of a version's descriptors with their prompts, searchable."""
    body = await run_in_threadpool(
        _page,
        res,
        name,
        version,
        browse.count_descriptor_rows,
        browse.descriptors_page,
        search,
        DESCRIPTOR_ORDER[order],
        offset,
        limit,
    )
    return JSONResponse(body)


@router.post(
    "/v1/libraries",
    dependencies=multipart_writes,
    status_code=202,
    response_model=None,
    responses={202: {"model": JobOut}},
)
async def upload_library(
    res: ResourcesDep,
    file: Annotated[UploadFile, File(description="A descriptor library: .json, .jsonl or .csv")],
    name: Annotated[str, Form(description="Library name (an existing name gets a new version)")],
    template: Annotated[str, Form(description="Prompt template: paper, bare or a format string")] = "paper",
    baseline: Annotated[str, Form(description="Class-name prompt for the baseline")] = "a photo of a {class}.",
    strict: Annotated[bool, Form(description="Refuse prompts over CLIP's 77-token limit")] = False,
    commit_every: Annotated[
        int, Form(ge=1, le=1_000_000, description="Prompts embedded and committed at a time")
    ] = 1024,
    index: Annotated[
        str | None,
        Form(max_length=200, description="Retrieval index factory [default: Flat, PQ256x4fs+rerank above 50,000]"),
    ] = None,
) -> JSONResponse:
    """Validate the file, then ingest it in the background: 202 with the job (poll /v1/jobs/{id})."""
    data = await read_upload(file, res.settings.limits.max_library_bytes, "a library file")
    options = {"template": template, "baseline": baseline, "strict": strict, "index_factory": index}
    record = await run_in_threadpool(start_ingest, res, file.filename or "library", data, name, options, commit_every)
    return JSONResponse(record, status_code=202, headers={"Location": f"/v1/jobs/{record['id']}"})


@router.delete("/v1/libraries/{name}", dependencies=writes, response_model=None, responses={200: {"model": DeletedOut}})
async def delete_library(
    res: ResourcesDep, name: str, version: Version = None, with_runs: bool = False
) -> JSONResponse:
    """Delete one version, or without ``version`` every version; cached prompt vectors stay.
    A version with evaluation runs is refused (422) unless ``with_runs=true``."""
    doomed = await run_in_threadpool(library_admin.delete_library, res.store, name, version, with_runs)
    for info in doomed:
        res.forget(info.id)
    return JSONResponse({"library": name, "deleted_versions": [i.version for i in doomed]})
