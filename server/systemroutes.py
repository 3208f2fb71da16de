"""Docker's system, prune and network routes: ``/system/df``, ``/containers/prune``,
``/images/prune``, ``/images/search`` and ``/networks``.

Each route binds one job (``jobs/diskusage.py``, ``prune.py``, ``search.py``, ``networks.py``).
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from server import render
from server.containerroutes import ok_empty, whole_body
from server.routes import (
    Binder,
    Bound,
    Route,
    created_one,
    path_args,
    query,
    with_path,
)


def repeated(key: str) -> Binder:
    """Bind every value of query key *key* as one list param (``?type=image&type=volume``)."""

    async def bind(request: web.Request) -> Bound:
        return (), {key: request.query.getall(key, [])}

    return bind


ROUTES: Final[tuple[Route, ...]] = (
    Route("GET", "/system/df", "system_df", repeated("type"), render.one),
    Route("POST", "/containers/prune", "container_prune", query("filters"), render.one),
    Route("POST", "/images/prune", "image_prune", query("filters"), render.one),
    Route("GET", "/images/search", "search", query("term", "limit", "filters"), render.array),
    Route("GET", "/networks", "networks", query("filters"), render.array),
    Route("POST", "/networks/create", "network_create", whole_body(), created_one),
    Route(
        "POST",
        "/networks/{id}/connect",
        "network_connect",
        with_path("id", binder=whole_body()),
        ok_empty,
    ),
    Route(
        "POST",
        "/networks/{id}/disconnect",
        "network_disconnect",
        with_path("id", binder=whole_body()),
        ok_empty,
    ),
    Route("POST", "/networks/prune", "network_prune", query("filters"), render.one),
    Route(
        "GET",
        "/networks/{id}",
        "network_inspect",
        with_path("id", binder=query("verbose", "scope")),
        render.one,
    ),
    Route("DELETE", "/networks/{id}", "network_delete", path_args("id"), render.empty),
)
