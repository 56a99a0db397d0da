"""POST /v1/retrieve: the library-wide best descriptors for an image or a text query, with
how exact the answer is (the retrieval index and its measured recall)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.store import LibraryNotFound
from whyclip.ui.api.dependencies import ResourcesDep, read_access
from whyclip.ui.api.error_responses import ERROR_RESPONSES, ApiError
from whyclip.ui.api.routes.common import embed_uploads
from whyclip.ui.api.schemas import RetrieveOut
from whyclip.ui.api.uploads import multipart_body

router = APIRouter(tags=["retrieve"], dependencies=[Depends(read_access)], responses=ERROR_RESPONSES)
MAX_TEXT = 1000


@router.post(
    "/v1/retrieve", dependencies=[Depends(multipart_body)], response_model=None, responses={200: {"model": RetrieveOut}}
)
async def retrieve(
    res: ResourcesDep,
    library: Annotated[str, Form(description="Library to search")],
    image: Annotated[UploadFile | None, File(description="An image query (or send text)")] = None,
    text: Annotated[
        str | None, Form(description="A text query, embedded by the text encoder (or send an image)")
    ] = None,
    k: Annotated[int, Form(ge=1, le=1000, description="Descriptors to return")] = 10,
    version: Annotated[int | None, Form(ge=1, le=2**31 - 1, description="Library version [default: newest]")] = None,
) -> JSONResponse:
    """Which descriptors in the whole library match the query best (FAISS or the exact scan)."""
    if (image is None) == (text is None or not text.strip()):
        raise ApiError(422, "bad request: send exactly one query: an 'image' file or a non-empty 'text'")
    if text is not None and len(text) > MAX_TEXT:
        raise ApiError(413, f"text: {len(text)} characters, over the limit of {MAX_TEXT}")
    lib = await run_in_threadpool(res.library, library, version)
    encoder = await run_in_threadpool(lambda: res.encoder)
    check_library_encoder(lib, encoder)  # the one rule every surface applies: an old id of this model is accepted
    if image is not None:
        names, vectors = await embed_uploads(res, [image], {})
        query: dict[str, str | None] = {"kind": "image", "image": names[0]}
    else:
        vectors = (await run_in_threadpool(encoder.embed_texts, [text]))[0]
        query = {"kind": "text", "text": text}
    try:
        hits = (await run_in_threadpool(lib.retrieve, vectors, k))[0]
    except LibraryNotFound:  # deleted while this request ran: never serve it again
        res.forget(lib.info.id)
        raise
    i = lib.info
    r = lib.retrieval
    exact = r["exact"]
    note = (
        "exact: every descriptor was scored" + (f" ({i.index_factory}: {r['note']})" if r["note"] else "")
        if exact
        else f"approximate ({r['index']}): recall@10 {r['recall_at_10']:.3f} against exact search, measured on "
        f"{r['calibrated_on'] or 'image-like queries'}" + ("; text queries may differ" if text else "")
    )
    body = {
        "library": i.name,
        "version": i.version,
        "query": query,
        "retrieved": [
            {
                "class": h.class_name,
                "descriptor": h.descriptor,
                "prompt": h.prompt,
                "similarity": h.similarity,
                "descriptor_id": h.descriptor_id,
            }
            for h in hits
        ],
        "index": {
            "factory": i.index_factory,
            "params": i.index_params,
            "exact": exact,
            "recall_at_10": r["recall_at_10"],
            "calibrated_on": r["calibrated_on"],
        },
        "note": note,
    }
    return JSONResponse(body)
