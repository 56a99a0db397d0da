"""Helpers the routers share: decoding and encoding off the event loop, and info as JSON."""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from whyclip.ingest.encoder.prepared import prepare_one
from whyclip.store import AGGREGATES, LibraryInfo, display_name
from whyclip.ui.api.batcher import QueueFull
from whyclip.ui.api.dependencies import Resources
from whyclip.ui.api.error_responses import ApiError
from whyclip.ui.api.uploads import decode_images, read_image_uploads

RETRY_AFTER_S = 1
BUDGET_WAIT_SHARE = 0.5  # of the request time limit, spent at most waiting for the decode budget


def check_aggregate(aggregate: str | None) -> None:
    if aggregate is not None and aggregate not in AGGREGATES:
        raise ApiError(422, f"bad request: aggregate: {aggregate!r} is not one of {', '.join(AGGREGATES)}")


async def decode_uploads(
    res: Resources, uploads: list[UploadFile], seconds: dict[str, float]
) -> tuple[list[str], list]:
    """Read and decode (threads) uploaded images, in order: their names and each one as the
    encoder takes it (shrunk to the tower's input under the decode budget, where it can be)."""
    files = await read_image_uploads(uploads, res.settings.limits)
    t = time.perf_counter()
    limits = res.settings.limits
    encoder = await run_in_threadpool(lambda: res.encoder)  # loads the model on first use
    # on the decode threads alone (as many as the budget holds images at the limit): images
    # decoded on any of the many request threads left each thread's malloc arena holding
    # freed picture memory, and sixteen worst requests at once peaked at 4 GB instead of 2
    pictures = await asyncio.get_running_loop().run_in_executor(
        res.decode_pool,
        decode_images,
        files,
        limits.max_image_pixels,
        res.explain_limits,
        res.decode_budget,
        # a request that cannot get its decode share in time hears "busy, retry" (503)
        # before the request timeout would answer 504
        time.monotonic() + BUDGET_WAIT_SHARE * limits.request_seconds,
        lambda picture: prepare_one(encoder, picture),
    )
    names = [name for name, _ in files]
    del files  # the encoded bytes are not needed any more
    seconds["decode"] = time.perf_counter() - t
    return names, pictures


async def embed_uploads(
    res: Resources, uploads: list[UploadFile], seconds: dict[str, float]
) -> tuple[list[str], np.ndarray]:
    """Read, decode (threads) and encode (the micro-batcher) uploaded images, in order."""
    names, pictures = await decode_uploads(res, uploads, seconds)
    t = time.perf_counter()
    batcher = await run_in_threadpool(lambda: res.batcher)
    try:
        vectors = await batcher.embed(pictures)
    except QueueFull as exc:
        raise ApiError(
            503, f"the server is busy ({exc}): retry in {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)}
        ) from None
    seconds["encode"] = time.perf_counter() - t
    return names, vectors


def info_dict(info: LibraryInfo) -> dict:
    out = dict(vars(info))
    out["created_at"] = info.created_at.isoformat()
    out["encoder_name"] = display_name(info.encoder_name)  # never the server's paths
    out["source"] = display_name(info.source)
    out["retrieval"] = info.retrieval
    return out
