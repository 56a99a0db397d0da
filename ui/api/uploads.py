"""Uploaded files, checked against the limits before anything is decoded: the content
type, the count, bytes per file, and pixels from the image header (a decompression bomb is
refused before its pixels are allocated); then decoded by the same code the CLI uses."""

from __future__ import annotations

import io
import time
import warnings

from fastapi import Request, UploadFile
from PIL import Image, UnidentifiedImageError

from whyclip.ingest.images import read_image_bytes
from whyclip.ingest.services.explain import ExplainLimits, check_pixel_total
from whyclip.store import InputError
from whyclip.ui.api.decode_budget import Busy, PixelBudget
from whyclip.ui.api.error_responses import ApiError
from whyclip.ui.api.settings import Limits


def check_multipart(content_type: str | None) -> None:
    if not (content_type or "").lower().startswith("multipart/form-data"):
        raise ApiError(415, f"send a multipart/form-data body (got {content_type or 'no content type'!r})")


def multipart_body(request: Request) -> None:
    """A route dependency: a body that is not multipart/form-data is a 415, before its fields
    are validated (which would blame each missing field with a 422)."""
    check_multipart(request.headers.get("content-type"))


async def read_upload(upload: UploadFile, limit: int, what: str) -> bytes:
    """The file's bytes, or a 413 once it passes ``limit`` (read in chunks, never more)."""
    chunks, size = [], 0
    while chunk := await upload.read(1 << 20):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"{upload.filename or what}: over the limit of {limit:,} bytes for {what}")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_image_uploads(uploads: list[UploadFile], limits: Limits) -> list[tuple[str, bytes]]:
    if not uploads:
        raise ApiError(422, "bad request: image: missing (send one or more 'image' files)")
    if len(uploads) > limits.max_images:
        raise ApiError(413, f"{len(uploads)} images in one request; the limit is {limits.max_images}")
    out = []
    for i, up in enumerate(uploads):
        name = up.filename or f"image {i}"
        out.append((name, await read_upload(up, limits.max_image_bytes, "an image")))
    return out


def header_pixels(name: str, data: bytes, max_pixels: int) -> int:
    """The pixels the image header declares (0 where the header cannot be read: decoding
    will say why), refused with a 413 over ``max_pixels`` before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        raise ApiError(
            413, f"{name}: far too many pixels for a safe image (a decompression bomb?): downscale it first"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        width = height = 0  # read_image_bytes names the problem
    if width * height > max_pixels:
        raise ApiError(
            413,
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (a decompression bomb?): downscale it first",
        )
    return width * height


def decode_images(
    files: list[tuple[str, bytes]],
    max_pixels: int,
    limits: ExplainLimits,
    budget: PixelBudget,
    deadline: float,
    prepare=lambda picture: picture,
) -> list:
    """Decode a request's images, after checking from their headers alone that each one and
    all of them together are within the limits (the explanation service's pixel bound per
    call, :class:`~whyclip.ingest.services.explain.ExplainLimits`): a 413 before any decoding.

    One image at a time, under the process's decode ``budget``: each is decoded and
    ``prepare``d (shrunk to what the encoder takes) before the next, so a request holds one
    full-size picture at a time and all requests together hold at most the budget. A 503
    where the budget stays spent until ``deadline`` (``time.monotonic()``)."""
    sizes = [header_pixels(name, data, max_pixels) for name, data in files]
    try:
        check_pixel_total(sum(sizes), len(files), limits)
    except InputError as exc:
        raise ApiError(413, str(exc)) from None
    out = []
    for (name, data), size in zip(files, sizes, strict=True):
        try:
            if time.monotonic() > deadline:  # queued for the decode threads past its share of time
                raise Busy("every decode thread was taken for too long")
            with budget.hold(size or max_pixels, deadline - time.monotonic()):  # an unreadable header: assume the worst
                out.append(prepare(read_image_bytes(name, data)))
        except Busy as exc:
            raise ApiError(
                503, f"the server is busy decoding images ({exc}): retry in 1 s", {"Retry-After": "1"}
            ) from None
    return out
