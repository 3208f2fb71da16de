"""server/openapi.yaml against the route table: a well-formed OpenAPI 3.0 document whose
operations are exactly the routes dockyard serves.

Vocabulary: an *operation* is a (METHOD, path) of the document; a *route* is one of the Route
rows of ``server/routes.py``, ``server/containerroutes.py`` and ``server/systemroutes.py``, plus
``/_ping`` (GET and HEAD) that ``server/app.py`` registers itself. Route paths are aiohttp
patterns: ``{name:.+}`` is written ``{name}`` in the document.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from engine import Engine
from server.app import build_app
from server.containerroutes import ROUTES as CONTAINER_ROUTES
from server.routes import ROUTES, Route
from server.systemroutes import ROUTES as SYSTEM_ROUTES

DOCUMENT = Path(__file__).resolve().parents[2] / "server" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PING = {("GET", "/_ping"), ("HEAD", "/_ping")}
_VARIABLE = re.compile(r"\{([^{}:]+)(?::[^{}]*)?\}")


def normalise(path: str) -> str:
    """An aiohttp path pattern as an OpenAPI path: ``{name:.+}`` → ``{name}``."""
    return _VARIABLE.sub(lambda m: "{" + m[1] + "}", path)


def table() -> tuple[Route, ...]:
    """Every row of the three route tables."""
    return (*ROUTES, *CONTAINER_ROUTES, *SYSTEM_ROUTES)


def routes() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the tables hold, plus /_ping."""
    return {(r.method, normalise(r.path)) for r in table()} | PING


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The parsed document."""
    with DOCUMENT.open(encoding="utf-8") as f:
        loaded = yaml.safe_load(f)
    assert isinstance(loaded, dict), f"{DOCUMENT}: not a mapping"
    return loaded


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(METHOD, path, operation) of every operation of *document*."""
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/components/...``) to what it names."""
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_document_is_valid_openapi_3_0(document: dict[str, Any]) -> None:
    # schemathesis ships the OpenAPI 3.0 meta-schema with a validator built on jsonschema;
    # importing it touches a name jsonschema has deprecated, which is not ours to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from schemathesis.specs.openapi.definitions import OPENAPI_30_VALIDATOR

    assert re.fullmatch(r"3\.0\.\d+", str(document.get("openapi"))), document.get("openapi")
    errors = sorted(OPENAPI_30_VALIDATOR.iter_errors(document), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:10])


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    missing: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                try:
                    resolve(document, node)
                except (KeyError, TypeError):
                    missing.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert not missing, f"unresolved $ref: {sorted(set(missing))}"


def test_operations_are_exactly_the_served_routes(document: dict[str, Any]) -> None:
    documented = {(method, path) for method, path, _ in operations(document)}
    served = routes()
    undocumented = sorted(served - documented)
    unserved = sorted(documented - served)
    assert not undocumented and not unserved, (
        f"routes served but not in {DOCUMENT.name}: "
        f"{[f'{m} {p}' for m, p in undocumented]}; "
        f"documented but not served: {[f'{m} {p}' for m, p in unserved]}"
    )


def test_route_table_is_what_the_app_serves() -> None:
    # A route registered in server/app.py outside the tables would escape the check above; the
    # one exception is the catch-all that answers dockerd's 404 for every unserved path.
    app = build_app(Engine())
    registered = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and not route.resource.canonical.startswith("/v{")
    }
    assert ("*", "/{path}") in registered
    registered.discard(("*", "/{path}"))
    assert registered == routes(), (
        f"served by build_app but not in the route tables: {sorted(registered - routes())}; "
        f"in the tables but not served: {sorted(routes() - registered)}"
    )


def test_operations_name_the_job_their_route_runs(document: dict[str, Any]) -> None:
    jobs = {(r.method, normalise(r.path)): r.job for r in table()}
    wrong = [
        f"{method} {path}: x-dockyard-job {op.get('x-dockyard-job')!r}, route runs {jobs[key]!r}"
        for method, path, op in operations(document)
        if (key := (method, path)) in jobs and op.get("x-dockyard-job") != jobs[key]
    ]
    assert not wrong, "\n".join(wrong)


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(document)]
    assert all(ids), "every operation needs an operationId"
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_path_parameter_is_declared(document: dict[str, Any]) -> None:
    problems: list[str] = []
    for method, path, op in operations(document):
        in_path = set(re.findall(r"\{([^{}]+)\}", path))
        declared = {
            p["name"]
            for p in (resolve(document, p) for p in op.get("parameters", []))
            if p["in"] == "path"
        }
        for name in sorted(in_path - declared):
            problems.append(f"{method} {path}: path parameter {name!r} is not declared")
        for name in sorted(declared - in_path):
            problems.append(f"{method} {path}: declares path parameter {name!r} not in the path")
    assert not problems, "\n".join(problems)


def test_every_response_is_documented_with_a_status(document: dict[str, Any]) -> None:
    problems: list[str] = []
    for method, path, op in operations(document):
        statuses = set(op.get("responses", {}))
        if not statuses:
            problems.append(f"{method} {path}: no responses")
        if not {"500"} <= statuses:
            problems.append(f"{method} {path}: no 500 (any route can fail unexpectedly)")
        for status, response in op.get("responses", {}).items():
            response = resolve(document, response)
            if int(status) < 400:
                continue
            if method == "HEAD":  # the status and headers of the error, never a body
                if response.get("content"):
                    problems.append(f"{method} {path} {status}: a HEAD answer has no body")
                continue
            schema = response.get("content", {}).get("application/json", {}).get("schema")
            if schema != {"$ref": "#/components/schemas/ErrorResponse"}:
                problems.append(f"{method} {path} {status}: not Docker's ErrorResponse")
    assert not problems, "\n".join(problems)


def _json_body_routes() -> set[tuple[str, str]]:
    """Routes whose binder reads a JSON body: the binder calls routes.json_body (directly, or
    through body_fields, whole_body, job_body or a binder of its own)."""
    found = set()
    for route in table():
        if _reads_json(route.bind):
            found.add((route.method, normalise(route.path)))
    return found


def _reads_json(binder: Any, seen: set[int] | None = None) -> bool:
    seen = seen if seen is not None else set()
    code = getattr(binder, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    if "json_body" in code.co_names:
        return True
    for cell in getattr(binder, "__closure__", None) or ():
        try:
            inner = cell.cell_contents
        except ValueError:
            continue
        if callable(inner) and _reads_json(inner, seen):
            return True
    return False


def test_routes_with_a_json_body_have_a_request_body_schema(document: dict[str, Any]) -> None:
    ops = {(m, p): op for m, p, op in operations(document)}
    json_routes = _json_body_routes()
    assert ("POST", "/containers/create") in json_routes  # the detection itself works
    problems = []
    for key in sorted(json_routes & set(ops)):
        body = resolve(document, ops[key].get("requestBody", {}))
        schema = body.get("content", {}).get("application/json", {}).get("schema")
        if not schema:
            problems.append(f"{key[0]} {key[1]}: reads a JSON body but documents no schema")
    assert not problems, "\n".join(problems)


def test_normalise_path_patterns() -> None:
    assert normalise("/images/{name:.+}/json") == "/images/{name}/json"
    assert normalise("/containers/{id}/json") == "/containers/{id}/json"
    assert normalise("/a/{x:[0-9]+}/{y}") == "/a/{x}/{y}"
