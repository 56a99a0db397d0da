"""What is checked from the request line and headers alone, before any body is read: the
``Host`` header (:class:`HostCheck`) and the API key (:class:`KeyGate`). A client that may
not send a body is refused before it has sent one, and a page on a foreign name (DNS
rebinding) gets no answer, nor a redirect that points at its host."""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Match

from whyclip.ui.api.dependencies import Resources, check_key, read_access, write_access
from whyclip.ui.api.error_responses import ApiError, error_response

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_PASSED = "whyclip.host_checked"


def host_pattern(name: str) -> str:
    """A host name as the Host header spells it: lower case, an IPv6 address in brackets."""
    name = name.strip().lower()
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


class HostCheck:
    """Starlette's ``TrustedHostMiddleware`` (the port aside, ``*.example.com`` patterns, ``*``
    for any), with its refusal in the service's JSON form."""

    def __init__(self, app, allowed_hosts: tuple[str, ...]):
        self.app = app
        self.checked = TrustedHostMiddleware(
            self._passed, allowed_hosts=[host_pattern(h) for h in allowed_hosts], www_redirect=False
        )

    async def _passed(self, scope, receive, send):
        scope[_PASSED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.checked(scope, receive, send)

        async def json_refusal(message):
            if scope.get(_PASSED):
                await send(message)
            elif message["type"] == "http.response.start":  # the check's own plain-text 400
                message = "this server does not answer to that Host name: its operator can add it with --allowed-host"
                await error_response(400, message)(scope, receive, send)

        await self.checked(scope, receive, json_refusal)


def _calls(dependant: Dependant):
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def _access(route: APIRoute) -> str | None:
    calls = set(_calls(route.dependant))
    return "write" if write_access in calls else "read" if read_access in calls else None


class KeyGate:
    """The key check of a route that needs one (``write_access``, or ``read_access`` with
    ``keys_for_reads``), made from the headers before the body is read; the route's own
    dependency repeats it. ``routes`` are the routers' own routes (included without a
    prefix), whose dependencies say what each needs."""

    def __init__(self, app, resources: Resources, routes: list[APIRoute]):
        self.app = app
        self.res = resources
        self.routes = [(route, _access(route)) for route in routes]

    def _needs(self, scope) -> str | None:
        for route, access in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return access
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            access = self._needs(scope)
            if access == "write" or (access == "read" and self.res.settings.keys_for_reads):
                headers = Headers(scope=scope)
                try:
                    check_key(self.res, headers.get("x-api-key"), headers.get("authorization"))
                except ApiError as exc:
                    return await error_response(exc.status, exc.message, exc.headers)(scope, receive, send)
        await self.app(scope, receive, send)
