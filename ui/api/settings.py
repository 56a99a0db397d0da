"""The service's settings: where the data is, which model, the API keys and the limits.

Settings travel to uvicorn's worker processes as JSON in one environment variable (never
the keys themselves: each process reads them from ``WHYCLIP_API_KEYS`` or the key file).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from whyclip.store import InputError

KEYS_ENV = "WHYCLIP_API_KEYS"
SETTINGS_ENV = "WHYCLIP_SERVE_SETTINGS"
MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Over a limit: a 413 (or 400) naming it."""

    max_body_bytes: int = 64 * MB
    max_image_bytes: int = 16 * MB
    max_image_pixels: int = 40_000_000  # decoded pixels of one image (decompression bombs)
    max_images: int = 32  # images per explain request
    max_library_bytes: int = 32 * MB
    request_seconds: float = 60.0  # longer: 504
    max_top: int = 1000  # these three and max_request_pixels are the explanation service's bounds
    max_retrieve: int = 1000
    max_descriptors_listed: int = 1000  # per shown class; the rest are counted
    # images of one explain request with maps=true (a decomposition each, about one more
    # image encode), and with check=occlusion (49 image encodes each: 9 s for ViT-B/32 on 2 cores)
    max_map_images: int = 8
    max_occlusion_images: int = 2
    # decoded pixels of all the images of one request: ten 12-megapixel photos, or three
    # images at the per-image limit (CLIP itself looks at 224 x 224)
    max_request_pixels: int = 128 * 1024 * 1024
    # full-size pixels decoded at once in the whole process, over every request in flight
    # (each image is shrunk to the tower's input before its share is given back)
    decode_pixels: int = 80_000_000


@dataclass(frozen=True)
class ServiceSettings:
    home: str | None = None
    db: str | None = None
    model: str | None = None  # default: clip-ViT-B-32
    device: str | None = None
    precision: str = "auto"
    key_file: str | None = None
    keys_for_reads: bool = False
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 32  # images encoded together
    batch_wait_ms: float = 5.0  # how long the first image of a batch waits for company
    queue_images: int = 256  # images waiting to be encoded; more: 503 with Retry-After
    ingest_workers: int = 1  # ingest jobs running at once in this process
    # Host header names answered (port aside); None: any (the app factory in process, and
    # behind a proxy that checks them). ``whyclip serve`` always sets them.
    allowed_hosts: tuple[str, ...] | None = None
    docs: bool = False  # interactive docs at /docs (Swagger UI, loaded from a CDN by the browser)
    header_seconds: float = 10.0  # a connection that has not sent a request's headers by then is closed

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServiceSettings:
        raw = json.loads(os.environ.get(SETTINGS_ENV) or "{}")
        limits = Limits(**raw.pop("limits", {}))
        if raw.get("allowed_hosts") is not None:
            raw["allowed_hosts"] = tuple(raw["allowed_hosts"])
        return cls(limits=limits, **raw)


def load_keys(settings: ServiceSettings) -> tuple[bytes, ...]:
    """The accepted API keys: ``WHYCLIP_API_KEYS`` (comma-separated) and the key file (one a
    line, ``#`` comments). Bytes, for :func:`hmac.compare_digest`."""
    keys = [k.strip() for k in os.environ.get(KEYS_ENV, "").split(",")]
    if settings.key_file:
        path = Path(settings.key_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise InputError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
        keys += [line.strip() for line in lines if not line.lstrip().startswith("#")]
    return tuple(dict.fromkeys(k.encode() for k in keys if k))
