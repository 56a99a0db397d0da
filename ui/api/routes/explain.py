"""POST /v1/explain: the ``whyclip explain --json`` objects for uploaded images."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whyclip.ingest.encoder.legacy_ids import check_library_encoder
from whyclip.store.db.calibrations import calibration_for

from whyclip.ui.render.explanation_json import explanation_json
from whyclip.ui.api.errors import ERROR_RESPONSES, ApiError
from whyclip.ui.api.schemas import ExplainOut
from whyclip.ui.api.dependencies import ResourcesDep, read_access
from whyclip.ui.api.uploads import check_multipart
from whyclip.ui.api.routes.common import check_aggregate, embed_uploads

router = APIRouter(tags=["explain"], dependencies=[Depends(read_access)], responses=ERROR_RESPONSES)


@router.post("/v1/explain", response_model=None, responses={200: {"model": ExplainOut}})
async def explain(
    request: Request,
    res: ResourcesDep,
    image: Annotated[list[UploadFile], File(description="One or more image files")],
    library: Annotated[str, Form(description="Library to explain with")],
    version: Annotated[int | None, Form(ge=1, le=2**31 - 1, description="Library version [default: newest]")] = None,
    top: Annotated[int, Form(ge=1, le=1000, description="Classes to show, with all their descriptors")] = 5,
    aggregate: Annotated[str | None, Form(description="mean, centroid, max or topk [default: the library's]")] = None,
    compare: Annotated[list[str] | None, Form(description="Two class names to contrast [default: the top two]")] = None,
    retrieve: Annotated[int, Form(ge=0, le=1000, description="Library-wide best descriptors to list")] = 10,
    calibrated: Annotated[bool, Form(description="Probabilities from the library version's stored calibration (whyclip calibrate)")] = False,
) -> JSONResponse:
    """Explain each uploaded image, exactly as ``whyclip explain --json`` does."""
    check_multipart(request.headers.get("content-type"))
    check_aggregate(aggregate)
    if compare is not None and len(compare) != 2:
        raise ApiError(422, f"bad request: compare: give exactly two class names (got {len(compare)})")
    lib = await run_in_threadpool(res.library, library, version)
    for name in compare or ():
        lib.class_position(name)  # an unknown class: 422 before any image is encoded
    agg = aggregate or lib.info.aggregate
    cal = await run_in_threadpool(calibration_for, res.store, lib.info.id, lib.info.name, lib.info.version, agg) if calibrated else None
    encoder = await run_in_threadpool(lambda: res.encoder)
    check_library_encoder(lib, encoder)  # read only: an old id of this model is accepted, not rewritten
    split = await run_in_threadpool(res.name_split, lib, encoder.cache_key)
    seconds: dict[str, float] = {}
    names, vectors = await embed_uploads(res, image, seconds)
    t = time.perf_counter()
    results = await run_in_threadpool(lib.explain, vectors, names, aggregate=aggregate, top=top,
                                      compare=tuple(compare) if compare else None, retrieve=retrieve,
                                      calibration=cal, name_split=split)  # fmt: skip
    seconds["explain"] = time.perf_counter() - t
    return JSONResponse({"explanations": [explanation_json(e, encoder) for e in results], "seconds": seconds})
