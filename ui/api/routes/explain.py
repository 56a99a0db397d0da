"""POST /v1/explain: the ``whyclip explain --json`` objects for uploaded images."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whyclip.ingest.services.explain import ExplainOptions, plan_explain
from whyclip.store import AGGREGATES, LibraryNotFound, display_name
from whyclip.ui.api.dependencies import ResourcesDep, read_access
from whyclip.ui.api.error_responses import ERROR_RESPONSES, ApiError
from whyclip.ui.api.routes.common import check_aggregate, embed_uploads
from whyclip.ui.api.schemas import ExplainOut
from whyclip.ui.api.uploads import multipart_body
from whyclip.ui.render.explanation_json import explanation_json

# descriptors listed per shown class unless a request asks for more (up to the server's
# max_descriptors_listed): one image of a 100k-descriptor class once answered 15 MB
DEFAULT_DESCRIPTORS = 50

router = APIRouter(tags=["explain"], dependencies=[Depends(read_access)], responses=ERROR_RESPONSES)


@router.post(
    "/v1/explain", dependencies=[Depends(multipart_body)], response_model=None, responses={200: {"model": ExplainOut}}
)
async def explain(
    res: ResourcesDep,
    image: Annotated[list[UploadFile], File(description="One or more image files")],
    library: Annotated[str, Form(description="Library to explain with")],
    version: Annotated[int | None, Form(ge=1, le=2**31 - 1, description="Library version [default: newest]")] = None,
    top: Annotated[int, Form(ge=1, le=1000, description="Classes to show, with all their descriptors")] = 5,
    aggregate: Annotated[
        str | None,
        Form(description="mean, centroid or max [default: the library's]", json_schema_extra={"enum": [*AGGREGATES]}),
    ] = None,
    compare: Annotated[list[str] | None, Form(description="Two class names to contrast [default: the top two]")] = None,
    retrieve: Annotated[int, Form(ge=0, le=1000, description="Library-wide best descriptors to list")] = 10,
    calibrated: Annotated[
        bool, Form(description="Probabilities from the library version's stored calibration (whyclip calibrate)")
    ] = False,
    descriptors: Annotated[
        int,
        Form(
            ge=1,
            description="Descriptors listed per shown class, best first; the rest are counted in "
            "descriptors_not_listed (scores always use every descriptor). At most the server's "
            "max_descriptors_listed (1,000 by default)",
        ),
    ] = DEFAULT_DESCRIPTORS,
) -> JSONResponse:
    """Explain each uploaded image, exactly as ``whyclip explain --json`` does."""
    check_aggregate(aggregate)
    if compare is not None and len(compare) != 2:
        raise ApiError(422, f"bad request: compare: give exactly two class names (got {len(compare)})")
    options = ExplainOptions(
        top=top,
        aggregate=aggregate,
        compare=tuple(compare) if compare else None,
        retrieve=retrieve,
        calibrated=calibrated,
        descriptors=descriptors,
    )
    # the version is resolved and checked (unknown classes: 422) before any image is encoded
    plan = await run_in_threadpool(
        plan_explain, res.store, library, version, options, load=res.library, limits=res.explain_limits
    )
    encoder = await run_in_threadpool(lambda: res.encoder)
    explainer = await run_in_threadpool(
        lambda: plan.with_encoder(encoder, res.name_split(plan.library, encoder.cache_key))
    )
    seconds: dict[str, float] = {}
    names, vectors = await embed_uploads(res, image, seconds)
    t = time.perf_counter()
    try:
        results = await run_in_threadpool(explainer.explain_vectors, vectors, names)
    except LibraryNotFound:  # deleted while this request ran: never serve it again
        res.forget(plan.library.info.id)
        raise
    seconds["explain"] = time.perf_counter() - t
    answers = [explanation_json(e, encoder) for e in results]
    for a in answers:  # a model folder by its last component, never the server's path
        a["encoder"] = display_name(a["encoder"])
    return JSONResponse({"explanations": answers, "seconds": seconds})
