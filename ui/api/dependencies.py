"""What the routes share, made once per process: the store, the encoder (loaded once), the
image micro-batcher, loaded library versions and the job board; and the ``Depends``
functions that hand them to routes, the API key check among them."""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, NamedTuple

import numpy as np
from fastapi import Depends, Header, Request

from whyclip import ingest
from whyclip.ingest.encoder.prepared import join_prepared
from whyclip.ingest.services.explain import ExplainLimits
from whyclip.store import ClassMatrices, Library, Store
from whyclip.ui.api.batcher import MicroBatcher
from whyclip.ui.api.decode_budget import PixelBudget
from whyclip.ui.api.error_responses import ApiError
from whyclip.ui.api.job_board import JobBoard
from whyclip.ui.api.settings import ServiceSettings, load_keys

SPLIT_NOTE_TTL_S = 30.0  # how long "no name/description split" is believed before a new look


class _Note(NamedTuple):
    at: float
    text: str


LOADED_VERSIONS = 8  # library versions kept loaded (their vectors are memory-mapped)


class Resources:
    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.keys = load_keys(settings)
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._encoder = None
        self._batcher: MicroBatcher | None = None
        self.decode_budget = PixelBudget(settings.limits.decode_pixels)
        lim = settings.limits
        self.decode_pool = ThreadPoolExecutor(
            max(1, lim.decode_pixels // max(1, lim.max_image_pixels)), thread_name_prefix="whyclip-decode"
        )
        self._jobs: JobBoard | None = None
        self._libraries: OrderedDict[int, Library] = OrderedDict()
        # (library id, encoder key) -> bare-descriptor scorer, or a note saying why there is none
        self._splits: dict[tuple[int, str], tuple[ClassMatrices, np.ndarray] | _Note] = {}

    @property
    def store(self) -> Store:
        with self._lock:
            if self._store is None:  # the service writes (ingest jobs), so it may create the store
                self._store = Store.open(self.settings.home, self.settings.db, create=True)
            return self._store

    @property
    def encoder(self):
        """The one encoder the micro-batcher and the ingest jobs share. Its precision is
        settled per modality once, under its own lock, and never changes after (see
        ``ClipEncoder.check_precision``), so threads cannot mix precisions."""
        store = self.store
        with self._lock:
            if self._encoder is None:
                from whyclip.store import StoreVerdicts

                s = self.settings
                self._encoder = ingest.load_encoder(s.model, s.device, s.precision, verdicts=StoreVerdicts(store))
            return self._encoder

    @property
    def explain_limits(self) -> ExplainLimits:
        """The explanation service's bounds, as this server's settings set them."""
        lim = self.settings.limits
        return ExplainLimits(
            max_top=lim.max_top,
            max_retrieve=lim.max_retrieve,
            max_descriptors_listed=lim.max_descriptors_listed,
            max_batch_pixels=lim.max_request_pixels,
        )

    @property
    def ready(self) -> bool:
        return self._encoder is not None

    @property
    def batcher(self) -> MicroBatcher:
        encoder = self.encoder
        with self._lock:
            if self._batcher is None:
                s = self.settings

                def encode(parts):  # each request's images arrive prepared one at a time
                    return encoder.embed_images(join_prepared(parts))

                self._batcher = MicroBatcher(encode, s.max_batch, s.batch_wait_ms, s.queue_images)
            return self._batcher

    @property
    def jobs(self) -> JobBoard:
        store = self.store
        with self._lock:
            if self._jobs is None:
                self._jobs = JobBoard(store.home / "jobs", self.settings.ingest_workers)
            return self._jobs

    def library(self, name: str, version: int | None = None) -> Library:
        """The newest (or the given) ready version, resolved now: a version published by any
        process is served at once. One request uses one version throughout."""
        info = self.store.library(name, version)
        with self._lock:
            lib = self._libraries.get(info.id)
            if lib is not None:
                self._libraries.move_to_end(info.id)
                return lib
        lib = self.store.load(name, info.version)
        with self._lock:
            self._libraries[info.id] = lib
            while len(self._libraries) > LOADED_VERSIONS:
                gone, _ = self._libraries.popitem(last=False)
                self._splits = {k: v for k, v in self._splits.items() if k[0] != gone}
        return lib

    def name_split(self, lib: Library, encoder_key: str) -> tuple[ClassMatrices, np.ndarray] | str:
        """The bare-descriptor scorer of ``lib`` for the name/description split (kept while
        the version is loaded), or the one-line note saying why there is none. A note is
        kept for ``SPLIT_NOTE_TTL_S`` and then looked up again (a later ``whyclip eval`` may
        embed what is missing): looking it up took 15 ms of every request on a library of
        1,000 descriptors that no eval had run on."""
        key = (lib.info.id, encoder_key)
        now = time.monotonic()
        with self._lock:
            found = self._splits.get(key)
            if isinstance(found, _Note) and now - found.at > SPLIT_NOTE_TTL_S:
                found = None
        if found is not None:
            return found.text if isinstance(found, _Note) else found
        scorer = lib.bare_scorer(encoder_key)
        with self._lock:
            if lib.info.id in self._libraries:
                self._splits[key] = _Note(now, scorer) if isinstance(scorer, str) else scorer
        return scorer

    def forget(self, library_id: int | None = None) -> None:
        with self._lock:
            if library_id is None:
                self._libraries.clear()
                self._splits.clear()
            else:
                self._libraries.pop(library_id, None)
                self._splits = {k: v for k, v in self._splits.items() if k[0] != library_id}

    def close(self) -> None:
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        if self._batcher is not None:
            self._batcher.close()
        if self._jobs is not None:
            self._jobs.close()


def get_resources(request: Request) -> Resources:
    return request.app.state.resources


def _presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    if x_api_key:
        return x_api_key
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


def check_key(res: Resources, x_api_key: str | None, authorization: str | None) -> None:
    """Constant-time comparison with every accepted key; the key is never logged or echoed."""
    if not res.keys:
        raise ApiError(
            403,
            "this server accepts no API keys, so it refuses this request: start it with WHYCLIP_API_KEYS or --key-file",
        )
    given = _presented_key(x_api_key, authorization)
    if given is None:
        raise ApiError(
            401,
            "an API key is needed: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'",
            {"WWW-Authenticate": "Bearer"},
        )
    presented = given.encode()
    ok = False
    for key in res.keys:  # every key compared, whatever matches
        ok |= hmac.compare_digest(presented, key)
    if not ok:
        raise ApiError(403, "the API key is not valid")


KeyHeader = Annotated[str | None, Header(alias="X-API-Key", description="API key (or send Authorization: Bearer KEY)")]
AuthHeader = Annotated[str | None, Header(alias="Authorization", include_in_schema=False)]


def write_access(request: Request, x_api_key: KeyHeader = None, authorization: AuthHeader = None) -> None:
    check_key(get_resources(request), x_api_key, authorization)


def read_access(request: Request, x_api_key: KeyHeader = None, authorization: AuthHeader = None) -> None:
    res = get_resources(request)
    if res.settings.keys_for_reads:
        check_key(res, x_api_key, authorization)


ResourcesDep = Annotated[Resources, Depends(get_resources)]
