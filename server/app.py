"""The aiohttp application: the route table served under every API version prefix.

One generic handler serves every route (bind → ``engine.job`` → render). One middleware maps the
engine's error classes to HTTP statuses, in the table below and nowhere else, with Docker's body
``{"message": ...}`` and the class name in the ``Dockyard-Error`` header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from engine import Engine
from engine.errors import (
    AlreadyExists,
    Cancelled,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotSupported,
    Unauthenticated,
    Unavailable,
    kind_of,
)
from engine.version import VERSION
from jobs.system import API_VERSION, MIN_API_VERSION
from server.containerroutes import ROUTES as CONTAINER_ROUTES
from server.hijack import hijack
from server.render import json_response
from server.routes import JOB_CHOSEN, ROUTES, Route
from server.systemroutes import ROUTES as SYSTEM_ROUTES

log = logging.getLogger(__name__)

ENGINE: Final = web.AppKey("engine", Engine)
HTTP_STATUS: Final[dict[type[EngineError], int]] = {
    NotFound: 404,
    AlreadyExists: 409,
    InvalidArgument: 400,
    FailedPrecondition: 409,
    Cancelled: 409,
    Unavailable: 503,
    NotSupported: 501,
    Unauthenticated: 401,
}
HEADERS: Final = {
    "Api-Version": API_VERSION,
    "Ostype": "linux",
    "Docker-Experimental": "false",
    "Builder-Version": "1",
    "Swarm": "inactive",
    "Server": f"dockyard/{VERSION} (linux)",
}
_VERSIONED: Final = re.compile(r"/v([0-9]+)\.([0-9]+)(/.*)")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def status_of(exc: EngineError) -> int:
    """Return the HTTP status for *exc* by its class (500 when none applies)."""
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_response(status: int, message: str, kind: str) -> web.Response:
    """Docker's error body, with the error's class name for dockyard's own clients."""
    response = json_response({"message": message}, status)
    response.headers["Dockyard-Error"] = kind
    return response


def guarded(handler: Handler) -> Handler:
    """Wrap *handler*: refuse cross-origin requests and API versions out of range, and turn
    engine errors and aiohttp's own HTTP errors into JSON error responses.

    Every route is wrapped this way rather than through an aiohttp middleware: the middleware
    machinery alone cost /_ping, the busiest route, a tenth of its time.
    """

    async def guard(request: web.Request) -> web.StreamResponse:
        try:
            if "Origin" in request.headers:  # a web page must not drive the daemon
                return error_response(403, "cross-origin requests are refused", "EngineError")
            if request.path.startswith("/v"):
                check_version(request.path)
            return await handler(request)
        except EngineError as exc:
            status = status_of(exc)
            if status >= 500:
                log.error("%s %s: %s", request.method, request.path, exc)
            return error_response(status, str(exc), kind_of(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_response(exc.status, exc.reason.lower(), "EngineError")
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path)
            message = f"internal error: {type(exc).__name__}: {exc}"
            return error_response(500, message, "EngineError")

    return guard


async def page_not_found(request: web.Request) -> web.StreamResponse:
    """Any path or method no route serves: dockerd's 404 for both."""
    return error_response(404, "page not found", "EngineError")


def check_version(path: str) -> None:
    """Refuse ``/vX.Y/…`` outside [MIN_API_VERSION, API_VERSION] with dockerd's messages."""
    match = _VERSIONED.fullmatch(path)
    if not match:
        return
    asked = (int(match[1]), int(match[2]))
    text = f"{match[1]}.{match[2]}"
    if asked < _parse(MIN_API_VERSION):
        raise InvalidArgument(
            f"client version {text} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    if asked > _parse(API_VERSION):
        raise InvalidArgument(
            f"client version {text} is too new. Maximum supported API version is {API_VERSION}"
        )


def _parse(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    if "Api-Version" not in headers:  # ping's are there already
        headers.update(HEADERS)  # replacing aiohttp's own Server header


# /_ping is the busiest route (every docker command starts with one): its headers are built once.
PING_HEADERS: Final = {
    **HEADERS,
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
    "Content-Type": "text/plain; charset=utf-8",
}


async def ping(request: web.Request) -> web.StreamResponse:
    """GET and HEAD /_ping: OK, no caching."""
    return web.Response(body=b"OK", headers=PING_HEADERS)


def _serve(route: Route) -> Handler:
    async def handle(request: web.Request) -> web.StreamResponse:
        args, params = await route.bind(request)
        name = request.get(JOB_CHOSEN) or route.job or request.match_info["name"]
        job = request.app[ENGINE].job(name, *args, **params)
        if route.render is not hijack:
            job.stdin.attach(request.content)
        return await route.render(request, job)

    return handle


def build_app(engine: Engine) -> web.Application:
    """Return the application serving ROUTES for *engine*, bare and under ``/vX.Y``."""
    app = web.Application()
    app[ENGINE] = engine
    app.on_response_prepare.append(_headers)
    for prefix in ("", r"/v{api_version:[0-9]+\.[0-9]+}"):
        app.router.add_get(prefix + "/_ping", guarded(ping))
        for route in (*CONTAINER_ROUTES, *ROUTES, *SYSTEM_ROUTES):  # the busiest first
            app.router.add_route(route.method, prefix + route.path, guarded(_serve(route)))
    # Last, and matching anything (a decoded path may hold a newline, which "." would not match).
    app.router.add_route("*", r"/{path:[\s\S]*}", guarded(page_not_found))
    return app
