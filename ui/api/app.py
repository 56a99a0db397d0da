"""The app factory: ``create_app(settings)`` builds the FastAPI application (OpenAPI at
/openapi.json; interactive docs at /docs only when ``settings.docs``: Swagger UI loads from
a CDN, which an offline browser cannot reach); ``app_from_env`` is what each uvicorn worker
process calls."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from whyclip.ui.api.dependencies import Resources
from whyclip.ui.api.error_responses import install_handlers
from whyclip.ui.api.gates import HostCheck, KeyGate
from whyclip.ui.api.limits import LimitsMiddleware
from whyclip.ui.api.routes import explain, health, jobs, libraries, retrieve
from whyclip.ui.api.settings import ServiceSettings

log = logging.getLogger(__name__)


def _warm(res: Resources) -> None:
    """Load the model and open the store in the background, so /healthz answers at once
    and /readyz turns ready when both are there."""
    try:
        _ = res.store  # the properties open the store and load the model on first access
        removed = res.jobs.remove_interrupted_uploads()
        if removed:
            log.info("removed %d interrupted upload(s)", removed)
        _ = res.batcher
        log.info("model loaded and store open: ready")
    except Exception as exc:  # /readyz keeps saying not ready; requests name the problem
        log.error("not ready: %s", exc)


def create_app(settings: ServiceSettings | None = None, *, warm: bool = True) -> FastAPI:
    settings = settings or ServiceSettings()
    res = Resources(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        if warm:
            threading.Thread(target=_warm, args=(res,), name="whyclip-warm", daemon=True).start()
        yield
        res.close()

    app = FastAPI(
        title="whyclip",
        version="1",
        lifespan=lifespan,
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
        description="Explainable zero-shot image classification: each class is scored by its visual "
        "descriptors, and the ranked descriptor similarities are the explanation.",
    )
    app.state.resources = res
    install_handlers(app)
    routers = [module.router for module in (explain, retrieve, libraries, jobs, health)]
    for router in routers:
        app.include_router(router)
    # outermost last: the Host, then the key (both before any body is read), then the limits
    app.add_middleware(LimitsMiddleware, limits=settings.limits)
    routes = [route for router in routers for route in router.routes if isinstance(route, APIRoute)]
    app.add_middleware(KeyGate, resources=res, routes=routes)
    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed_hosts=settings.allowed_hosts)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (settings from ``WHYCLIP_SERVE_SETTINGS``)."""
    return create_app(ServiceSettings.from_env())
