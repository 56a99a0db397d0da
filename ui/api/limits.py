"""ASGI middleware for the limits every request shares: body size and request time.

The body is counted as it arrives (a missing or false ``Content-Length``, a chunked body,
does not get past it) and the request is answered 413 the moment it passes the limit: the
middleware sends the 413 itself and tells the app the client went away, so no body parser
in between can turn it into another answer (FastAPI's form parsing made it a 400). The rest
of the body is drained by the server and dropped. A request that takes longer than the
limit is answered 504 (its thread may finish its work unseen)."""

from __future__ import annotations

import asyncio
import json

from whyclip.ui.api.settings import Limits


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "status": status}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    def __init__(self, app, limits: Limits):
        self.app = app
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.max_body_bytes
        too_big = f"request body over the limit of {limit:,} bytes: send fewer or smaller files"
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_error(send, 413, too_big)
        seen = 0
        started = refused = False

        async def counted_receive():
            nonlocal seen, started, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    if not started:
                        started = True
                        await _send_error(send, 413, too_big)
                    return {"type": "http.disconnect"}  # the app stops reading; its answer is dropped
            return message

        async def tracked_send(message):
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, counted_receive, tracked_send), self.limits.request_seconds)
        except asyncio.TimeoutError:
            if not started:
                await _send_error(
                    send,
                    504,
                    f"request took longer than {self.limits.request_seconds:g} s: send fewer images, or retry",
                )
        except Exception:
            if not refused:  # a failure after the 413 (the app saw the client go away) is no failure
                raise
