"""GET /healthz (the process answers) and GET /readyz (model loaded, store reachable)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from whyclip.ui.api.dependencies import ResourcesDep
from whyclip.ui.api.schemas import HealthOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=None, responses={200: {"model": HealthOut}})
async def healthz() -> JSONResponse:
    return JSONResponse({"status": "ok"})


def _store_state(res) -> str:
    try:
        with res.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return "ok"
    except Exception as exc:  # unreachable database: not ready, and say why
        return f"unreachable: {type(exc).__name__}"


@router.get("/readyz", response_model=None, responses={200: {"model": HealthOut}, 503: {"model": HealthOut}})
async def readyz(res: ResourcesDep) -> JSONResponse:
    store = await run_in_threadpool(_store_state, res)
    ready = res.ready and store == "ok"
    body = {"status": "ready" if ready else "not ready", "model_loaded": res.ready, "store": store}
    return JSONResponse(body, status_code=200 if ready else 503)
