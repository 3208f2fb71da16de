"""Fuzz a live daemon with server/openapi.yaml: a bounded, reproducible schemathesis run.

Every operation of the document gets a few requests that the document allows (hypothesis draws
path, query and body from its schemas, the same draws on every run). No response may be a server
error (but a 501 the operation documents: see ``documented_refusal``), and every response must
be one the document lists: its status, its Content-Type for that status, and its JSON body
against the schema (for the streaming operations, ``x-dockyard-stream``, only the first two).

The daemon listens on a loopback TCP port besides its unix socket, and starts seeded: an image
``busybox:latest`` imported from a one-file tar, a created (never runnable) container ``seed``,
a volume ``seedvol``; the predefined networks ``host`` and ``none`` exist anyway. Path
parameters are now and then one of those, so requests reach real objects and not only 404s.

Vocabulary: a *case* is one generated request; *steering* rewrites a case before it is sent, for
the few inputs that would do harm or never end (each rule below says why).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.runner import events
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.daemon.conftest import ROOT, Daemon, free_port, request, start
from tests.linux.containerkit import mounts_under, remove_cgroups

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.geteuid() != 0, reason="needs root: the daemon's overlay driver and layer files"
    ),
]

DOCUMENT = ROOT / "server" / "openapi.yaml"
EXAMPLES_PER_OPERATION = 8  # x ~60 operations: a few hundred cases, well under a minute
REQUEST_TIMEOUT_MS = 20_000  # a request that hangs is a failure, not a stuck test
# Left out of the run, by operationId:
EXCLUDED = (
    # Runs whatever job the path names, services included: `serveapi` with random addresses
    # would listen where it is told, `events` would stream forever. Its binder is covered by
    # the routes that share it (JSON bodies) and by tests/daemon/test_api.py.
    "JobRun",
    # Hijacked connections: after the headers the socket is a raw stream both ways, which an
    # HTTP client cannot finish; tests/daemon/test_lifecycle.py drives them properly.
    "ContainerAttach",
    "ExecStart",
    # They contact the registry their input names, and test traffic stays on loopback:
    # tests/registry/ drives them against registries it runs.
    "ImagePush",
    "SystemAuth",
    "DistributionInspect",
)
SEED_IMAGE = "busybox:latest"
SEED_CONTAINER = "seed"
SEED_VOLUME = "seedvol"


@dataclass
class Seeds:
    """The objects the daemon starts with, by the path parameter kind that names them."""

    image_id: str
    container_id: str
    names: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Exchange:
    """One case sent: its operation and the status that came back."""

    operation: str
    status: int


def one_file_tar() -> bytes:
    """A root file system of one non-executable file: enough for images and created containers
    (nothing in it can run, so no case can start a real process)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("hello")
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seed(daemon: Daemon) -> Seeds:
    """Import the image, create the container and the volume; return their ids and names."""
    status, _, body = request(
        daemon,
        "POST",
        "/images/create?fromSrc=-&repo=busybox&tag=latest",
        one_file_tar(),
        {"Content-Type": "application/x-tar"},
    )
    assert status == 200, body
    image_id = json.loads(body.splitlines()[-1])["status"]
    create = json.dumps({"Image": SEED_IMAGE, "Cmd": ["/hello"]}).encode()
    status, _, body = request(
        daemon,
        "POST",
        f"/containers/create?name={SEED_CONTAINER}",
        create,
        {"Content-Type": "application/json"},
    )
    assert status == 201, body
    container_id = json.loads(body)["Id"]
    volume = json.dumps({"Name": SEED_VOLUME}).encode()
    status, _, body = request(
        daemon, "POST", "/volumes/create", volume, {"Content-Type": "application/json"}
    )
    assert status == 201, body
    return Seeds(
        image_id,
        container_id,
        {
            "/containers/": [SEED_CONTAINER, container_id, container_id[:12]],
            "/images/": [SEED_IMAGE, "busybox", image_id, image_id[7:19]],
            "/graph/images/": [SEED_IMAGE, image_id],
            "/volumes/": [SEED_VOLUME],
            "/networks/": ["host", "none"],
        },
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, str, Seeds]]:
    """A seeded daemon on a unix socket and a loopback TCP port; the API's base URL. Teardown
    stops it and removes its cgroup parent, its mounts (none are expected) and its files."""
    base = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    hosts = [f"unix://{base / 'dockyard.sock'}", f"tcp://127.0.0.1:{port}"]
    parent = f"dockyard-fuzz-{secrets.token_hex(4)}"
    daemon = start(base, "--insecure-tcp", "--cgroup-parent", parent, hosts=hosts)
    try:
        yield daemon, f"http://127.0.0.1:{port}/v1.45", seed(daemon)
    finally:
        daemon.stop(signal.SIGTERM)
        remove_cgroups(parent)
        left = mounts_under(base)
        for mount in reversed(left):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(base, ignore_errors=True)
        assert not left, f"mounts left behind: {left}"


# --- steering -----------------------------------------------------------------------------------


def steer(schema: Any, seeds: Seeds) -> None:
    """Register the schema's hooks: seed objects in path parameters, and the query rewrites."""

    @schema.hook("before_generate_path_parameters")
    def real_objects(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        operation = context.operation
        if operation.definition.raw.get("operationId") in ("ContainerStart", "ContainerRestart"):
            # Only the seed container: an id prefix such as "a" would otherwise start whatever
            # fuzzed container it matches, with random binds, devices and privileges.
            return st.just({"id": seeds.container_id})
        if operation.definition.raw.get("operationId") == "ContainerWait":
            return strategy  # a real container could be waited on for its next exit: forever
        for prefix, names in seeds.names.items():
            if operation.path.startswith(prefix) and "{" in operation.path:
                key = "id" if "{id}" in operation.path else "name"
                real = st.sampled_from(names).map(lambda value, key=key: {key: value})
                return st.one_of(strategy, real)
        return strategy

    @schema.hook("map_query")
    def bounded(context: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
        operation_id = context.operation.definition.raw.get("operationId")
        query = dict(query or {})
        if operation_id == "SystemEvents":
            query["until"] = "1"  # a stream with no `until` (or a future one) never ends
        elif operation_id == "ContainerLogs":
            query.pop("follow", None)  # follows a running container for as long as it runs
        elif operation_id == "ContainerStats":
            query["stream"] = False  # a running container's stats stream never ends
        elif operation_id == "ContainerWait":
            # next-exit and removed wait for a future that no case brings: only not-running,
            # which answers at once for a container that is not running (none runs here)
            query["condition"] = "not-running"
        elif operation_id == "ImageCreate":
            # A URL or an image name would make the daemon fetch it: loopback only here.
            query.pop("fromImage", None)
            if "fromSrc" in query:
                query["fromSrc"] = "-"
        elif operation_id == "GraphViz" and shutil.which("dot") is None:
            query["format"] = "dot"  # svg needs Graphviz; without it the answer is 501 anyway
        return query or None

    @schema.hook("before_generate_body")
    def runnable_image(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        if context.operation.definition.raw.get("operationId") != "ContainerCreate":
            return strategy
        # A random Image is almost never one that exists: half the bodies name the seed image,
        # so the rest of the body (HostConfig, mounts, limits) gets validated too.
        with_image = strategy.map(
            lambda body: {**body, "Image": SEED_IMAGE} if isinstance(body, dict) else body
        )
        return st.one_of(strategy, with_image)


# --- checks -------------------------------------------------------------------------------------


def documented_refusal(response: Any, case: Any) -> bool:
    """A 501 with Dockyard-Error NotSupported on an operation that documents 501: dockyard's
    deliberate answer for what it does not support yet (registry search, links, user networks,
    some HostConfig fields), not a failure of the server."""
    documented = "501" in case.operation.definition.raw.get("responses", {})
    return (
        response.status_code == 501
        and documented
        and response.headers.get("Dockyard-Error") == "NotSupported"
    )


def recorder(log: list[Exchange]) -> Callable[..., bool | None]:
    """A check that records every exchange (so the run can be counted and reported)."""

    def record_exchange(ctx: Any, response: Any, case: Any) -> bool | None:
        log.append(Exchange(f"{case.method} {case.path}", response.status_code))
        return None

    return record_exchange


def no_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's not_a_server_error, but for a documented NotSupported refusal (501)."""
    if documented_refusal(response, case):
        return None
    return not_a_server_error(ctx, response, case)


def documented_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """The JSON body against the documented schema, but for a stream of JSON lines (which is
    not one JSON document: each line has the schema, checked by the daemon tests)."""
    if case.operation.definition.raw.get("x-dockyard-stream"):
        return None
    return response_schema_conformance(ctx, response, case)


def describe(check: Any) -> str:
    """A failing check as method, path, params, body and response."""
    case, response = check.example, check.response
    body = base64.b64decode(case.body).decode(errors="replace")[:300] if case.body else None
    text = ""
    if response is not None and response.body is not None:
        text = base64.b64decode(response.body).decode(errors="replace")[:300]
    return (
        f"{case.method} {case.path_template} ({check.name}): path={case.path_parameters} "
        f"query={case.query} body={body!r} -> {response.status_code if response else '?'} "
        f"{text}\n  {check.message}"
    )


def errors_logged(daemon: Daemon) -> str:
    """The daemon's 500s as it logged them: the failed request and the exception, last 30."""
    wanted = re.compile(r".* ERROR .* failed( |$)|^[A-Za-z_.]+(Error|Exception)\b")
    log = (daemon.base / "daemon.log").read_text(errors="replace")  # fuzzed bytes are logged too
    lines = [line for line in log.splitlines() if wanted.match(line)]
    return "\n".join(lines[-30:])


def compatible_hypothesis() -> None:
    """Fail with the reason when hypothesis and hypothesis-jsonschema do not work together:
    hypothesis 6.170.10 removed ``many.more()``, which hypothesis-jsonschema 0.23.1 calls to
    draw every JSON object (so each operation with a query or a body would error)."""
    from hypothesis.internal.conjecture.utils import many

    if not hasattr(many, "more"):
        pytest.fail(
            f"hypothesis {hypothesis.__version__} lacks many.more(), which hypothesis-jsonschema "
            "needs: install hypothesis<6.170.10 (the test extras should pin it)"
        )


def run(base_url: str, seeds: Seeds, checks: list[Callable[..., Any]]) -> list[str]:
    """Run schemathesis over the document against *base_url*; return the problems found."""
    schema = schemathesis.from_path(str(DOCUMENT), base_url=base_url).exclude(
        operation_id=list(EXCLUDED)
    )
    steer(schema, seeds)
    settings = hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    runner = schemathesis.runner.from_schema(
        schema,
        checks=checks,
        hypothesis_settings=settings,
        request_timeout=REQUEST_TIMEOUT_MS,
        no_failfast=True,
    )
    problems: list[str] = []
    for event in runner.execute():
        if isinstance(event, events.AfterExecution):
            result = event.result
            problems += [describe(c) for c in result.checks if c.value.name == "failure"]
            problems += [
                f"{result.verbose_name}: {e.title or e.exception}: {e.message or ''}"
                for e in result.errors
            ]
        elif isinstance(event, events.InternalError):
            problems.append(f"schemathesis: {event.title}: {event.message}")
    return problems


def test_seeded_objects_are_reachable(live: tuple[Daemon, str, Seeds]) -> None:
    daemon, _, seeds = live
    status, _, body = request(daemon, "GET", f"/images/{SEED_IMAGE}/json")
    assert (status, json.loads(body)["Id"]) == (200, seeds.image_id)
    status, _, body = request(daemon, "GET", f"/containers/{seeds.container_id}/json")
    assert (status, json.loads(body)["Name"]) == (200, f"/{SEED_CONTAINER}")
    status, _, body = request(daemon, "GET", f"/volumes/{SEED_VOLUME}")
    assert status == 200, body


def test_responses_are_documented_and_never_server_errors(
    live: tuple[Daemon, str, Seeds],
) -> None:
    daemon, base_url, seeds = live
    compatible_hypothesis()
    exchanges: list[Exchange] = []
    began = time.monotonic()
    checks = [
        recorder(exchanges),
        no_server_error,
        status_code_conformance,
        content_type_conformance,
        documented_body,
    ]
    problems = run(base_url, seeds, checks)
    took = time.monotonic() - began
    operations = {e.operation for e in exchanges}
    assert exchanges, "schemathesis sent no request"
    assert daemon.proc.poll() is None, f"the daemon died during the run:\n{errors_logged(daemon)}"
    assert not problems, (
        f"{len(problems)} problem(s) in {len(exchanges)} cases ({took:.1f} s):\n"
        + "\n".join(problems)
        + f"\n\ndaemon errors:\n{errors_logged(daemon)}"
    )
    assert len(operations) > 40, f"only {len(operations)} operations were reached"
    # the seeded objects were found through path parameters, not only 404s
    found = {e.operation for e in exchanges if e.status < 300 and "{" in e.operation}
    assert len(found) >= 8, f"only these operations found a real object: {sorted(found)}"
    print(f"schemathesis: {len(exchanges)} cases in {took:.1f} s")  # shown with -s
