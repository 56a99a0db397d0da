"""uvicorn's HTTP/1.1 connection (the h11 protocol) with a bound on how long a client may
take to send a request's headers.

uvicorn closes a kept-alive connection that stays silent for ``timeout_keep_alive``, but any
byte received cancels that timer, and a new connection has none: a client that opens a
connection and never finishes its headers (slowloris, a half-open socket) held it for ever.
Here a connection that has not started a request ``header_seconds`` after it opened, or
after its last response, is closed, however it trickles bytes. A request whose headers are
in is bounded by the request time limit instead (:mod:`whyclip.ui.api.limits`)."""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.h11_impl import H11Protocol

from whyclip.ui.api.settings import ServiceSettings


@functools.cache
def _header_seconds() -> float:
    return ServiceSettings.from_env().header_seconds  # the worker's settings, as ``whyclip serve`` set them


class HeaderTimeoutProtocol(H11Protocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(_header_seconds(), self._headers_late, self.cycle)

    def _headers_late(self, cycle) -> None:
        """No new request since the timer was armed (the same cycle, or none): close."""
        if self.cycle is cycle and not self.transport.is_closing():
            self.transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        self._arm_header_timer()  # the next request's headers are due within the bound too
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)
