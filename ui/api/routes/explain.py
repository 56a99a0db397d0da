"""POST /v1/explain: the ``whyclip explain --json`` objects for uploaded images."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from whyclip.ingest.encoder.prepared import join_prepared
from whyclip.ingest.services.explain import ExplainOptions, plan_explain
from whyclip.ingest.services.maps import CHECKS, MapOptions
from whyclip.store import AGGREGATES, LibraryNotFound, display_name
from whyclip.ui.api.dependencies import ResourcesDep, read_access
from whyclip.ui.api.error_responses import ERROR_RESPONSES, ApiError
from whyclip.ui.api.routes.common import check_aggregate, decode_uploads, embed_uploads
from whyclip.ui.api.schemas import ExplainOut
from whyclip.ui.api.settings import Limits
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
    maps: Annotated[
        bool,
        Form(
            description="Where in the image: each explanation gains `maps`, a map of every listed descriptor "
            "(docs/explanations.md). At most the server's max_map_images images (8 by default)"
        ),
    ] = False,
    check: Annotated[
        str | None,
        Form(
            description="With maps: occlusion, the independent check (49 image encodes per image; at most the "
            "server's max_occlusion_images images, 2 by default)",
            json_schema_extra={"enum": [*CHECKS]},
        ),
    ] = None,
    dense: Annotated[
        bool, Form(description="With maps: also the sharper ClearCLIP map (it does not add up to S)")
    ] = False,
) -> JSONResponse:
    """Explain each uploaded image, exactly as ``whyclip explain --json`` does."""
    check_aggregate(aggregate)
    if compare is not None and len(compare) != 2:
        raise ApiError(422, f"bad request: compare: give exactly two class names (got {len(compare)})")
    check_maps(res.settings.limits, maps, check, dense, len(image))
    options = ExplainOptions(
        top=top,
        aggregate=aggregate,
        compare=tuple(compare) if compare else None,
        retrieve=retrieve,
        calibrated=calibrated,
        descriptors=descriptors,
        maps=MapOptions(check=check, dense=dense) if maps else None,
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
    try:
        if maps:  # the core's path: each image's fp32 decomposition gives its vector and its maps
            names, prepared = await decode_uploads(res, image, seconds)
            t = time.perf_counter()
            results = await run_in_threadpool(lambda: explainer.explain_prepared(join_prepared(prepared), names))
            seconds["maps"] = time.perf_counter() - t
        else:
            names, vectors = await embed_uploads(res, image, seconds)
            t = time.perf_counter()
            results = await run_in_threadpool(explainer.explain_vectors, vectors, names)
            seconds["explain"] = time.perf_counter() - t
    except LibraryNotFound:  # deleted while this request ran: never serve it again
        res.forget(plan.library.info.id)
        raise
    answers = [explanation_json(e, encoder) for e in results]
    for a in answers:  # a model folder by its last component, never the server's path
        a["encoder"] = display_name(a["encoder"])
    return JSONResponse({"explanations": answers, "seconds": seconds})


def check_maps(limits: Limits, maps: bool, check: str | None, dense: bool, n_images: int) -> None:
    """The map fields, before any work: ``check`` and ``dense`` go with ``maps``, and a request
    with maps holds at most the server's images for them (413 over, as for ``max_images``)."""
    if check is not None and check not in CHECKS:
        raise ApiError(422, f"bad request: check: {check!r} is not one of {', '.join(CHECKS)}")
    if (check is not None or dense) and not maps:
        raise ApiError(422, f"bad request: {'check' if check is not None else 'dense'} goes with maps: add maps=true")
    if maps and n_images > limits.max_map_images:
        raise ApiError(
            413,
            f"{n_images} images with maps in one request; the limit is {limits.max_map_images} "
            "(whyclip serve --max-map-images): send fewer images per request",
        )
    if check is not None and n_images > limits.max_occlusion_images:
        raise ApiError(
            413,
            f"{n_images} images with check={check} in one request; the limit is {limits.max_occlusion_images} "
            "(whyclip serve --max-occlusion-images): send fewer images per request",
        )
