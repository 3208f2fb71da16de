"""Blob downloads against a small misbehaving registry on 127.0.0.1 (aiohttp.web, in the test).

``BlobServer`` serves one blob under ``/v2/<name>/blobs/<digest>`` and, per request, does what
its ``plan`` says for that request number (cut the body, ignore ``Range``, answer 416, lie
about the length, send other bytes …); every request's headers are recorded. Each test runs one
event loop (``asyncio.run``) holding both the server and the client, and builds the
``registry.client.Repository`` by hand, as a pull would after ``Repository.open``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import pytest
from aiohttp import web

from engine.errors import Cancelled, InvalidArgument, Unavailable
from registry.auth import Authorizer
from registry.client import Repository
from registry.download import DigestMismatch, Retry, Spool, fetch, fetch_small
from registry.endpoint import Endpoint, RegistryConfig
from registry.manifest import Descriptor

T = TypeVar("T")
LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
NAME = "library/x"
SIZE = 300_000
FAST = Retry(attempts=5, delay=0.0, read_timeout=5.0)


def digest_of(data: bytes) -> str:
    """``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Step:
    """How one request is answered (the defaults answer correctly)."""

    cut_after: int | None = None  # close the connection after this many body bytes
    ignore_range: bool = False  # 200 with the whole blob
    range_416: bool = False  # 416 to a Range
    wrong_range_start: bool = False  # 206 from another offset than asked
    corrupt: bool = False  # same length, other bytes
    extra: bytes = b""  # more bytes than the blob
    chunked: bool = False  # no Content-Length
    short: int = 0  # leave this many bytes off the end (Content-Length agrees)
    status: int | None = None  # answer this status instead
    redirect: str | None = None  # 307 to this URL


@dataclass
class Seen:
    """One request the server got."""

    path: str
    headers: dict[str, str]
    port: int


@dataclass
class BlobServer:
    """One blob, served as ``plan[request number]`` says (then correctly)."""

    data: bytes
    plan: list[Step] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    @property
    def digest(self) -> str:
        """The blob's digest."""
        return digest_of(self.data)

    def blob_requests(self) -> list[Seen]:
        """The requests for the blob itself."""
        return [s for s in self.seen if "/blobs/" in s.path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer one blob request."""
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        n = len(self.blob_requests())
        self.seen.append(Seen(request.path, dict(request.headers), sock[1] if sock else 0))
        step = self.plan[n] if n < len(self.plan) else Step()
        if step.status is not None:
            return web.Response(status=step.status, body=b'{"errors":[{"code":"UNKNOWN"}]}')
        if step.redirect is not None:
            return web.Response(status=307, headers={"Location": step.redirect})
        return await self.send(request, step)

    async def handle_cdn(self, request: web.Request) -> web.StreamResponse:
        """The blob under another path (a redirect target), never challenging."""
        self.seen.append(Seen(request.path, dict(request.headers), 0))
        return await self.send(request, Step())

    async def send(self, request: web.Request, step: Step) -> web.StreamResponse:
        """The blob's bytes as *step* says."""
        body = self.data
        if step.corrupt:
            body = bytes(b ^ 0xFF for b in body[:64]) + body[64:]
        body = body[: len(body) - step.short] + step.extra
        status, headers = 200, {"Accept-Ranges": "bytes", "Docker-Content-Digest": self.digest}
        wanted = request.headers.get("Range", "")
        if wanted and not step.ignore_range:
            total = len(body)
            if step.range_416:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{total}"})
            start = int(wanted.removeprefix("bytes=").split("-")[0])
            if step.wrong_range_start:
                start = 0
            status, body = 206, body[start:]
            headers["Content-Range"] = f"bytes {start}-{total - 1}/{total}"
        response = web.StreamResponse(status=status, headers=headers)
        if not step.chunked:
            response.content_length = len(body)
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        part = body if step.cut_after is None else body[: step.cut_after]
        for i in range(0, len(part), 65536):
            await response.write(part[i : i + 65536])
        if step.cut_after is not None:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response


async def serving(server: BlobServer, body: Callable[[str], Awaitable[T]]) -> T:
    """Run *server* on 127.0.0.1 while *body(base_url)* runs; stop it after."""
    app = web.Application()
    app.router.add_get("/v2/{name:.+}/blobs/{digest}", server.handle)
    app.router.add_get("/cdn/{digest}", server.handle_cdn)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        return await asyncio.wait_for(body(f"http://127.0.0.1:{server.port}"), 60)
    finally:
        await runner.cleanup()


def repository(http: aiohttp.ClientSession, base: str, header: str = "") -> Repository:
    """A Repository on the plain-HTTP endpoint *base*, as ``Repository.open`` would make it."""
    registry = base.split("://", 1)[1]
    authorizer = Authorizer(None, ())
    authorizer.header = header
    return Repository(RegistryConfig(), http, Endpoint(registry, base, None), NAME, authorizer)


@dataclass
class Outcome:
    """What one fetch did."""

    error: BaseException | None
    data: bytes
    done: bool
    retries: list[int]
    progress: list[int]


def run_fetch(
    tmp_path: Path,
    server: BlobServer,
    retry: Retry = FAST,
    size: int | None = None,
    header: str = "",
) -> Outcome:
    """Fetch the server's blob into a spool in *tmp_path*; what happened."""
    blob = Descriptor(LAYER, server.digest, len(server.data) if size is None else size)
    spool = Spool(tmp_path / "spool")
    retries: list[int] = []
    progress: list[int] = []

    async def body(base: str) -> BaseException | None:
        async with aiohttp.ClientSession() as http:
            repo = repository(http, base, header)
            try:
                await fetch(repo, blob, spool, progress.append, retries.append, retry)
            except Exception as exc:
                return exc
            return None

    error = asyncio.run(serving(server, body))
    if not spool.done:
        spool.fail(RuntimeError("test: the fetch ended"))
    data = (tmp_path / "spool").read_bytes()
    return Outcome(error, data, spool.done, retries, progress)


@pytest.fixture
def blob() -> bytes:
    """Random bytes, a few chunks long."""
    return os.urandom(SIZE)


# -- the good path and resumes -----------------------------------------------------------------


def test_whole_blob_is_fetched_and_verified(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob)
    out = run_fetch(tmp_path, server)
    assert out.error is None
    assert out.done and out.data == blob
    assert out.retries == []
    assert out.progress[-1] == SIZE
    assert out.progress == sorted(out.progress)
    [only] = server.blob_requests()
    assert "Range" not in only.headers
    assert only.path == f"/v2/{NAME}/blobs/{server.digest}"


def test_cut_connection_resumes_with_range(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    # the first attempt stops at 40 %; the second, resumed, stops 40 % further into the rest
    server = BlobServer(blob, [Step(cut_after=cut), Step(cut_after=cut)])
    out = run_fetch(tmp_path, server)
    assert out.error is None, out.error
    assert out.done and out.data == blob
    ranges = [s.headers.get("Range") for s in server.blob_requests()]
    assert ranges == [None, f"bytes={cut}-", f"bytes={2 * cut}-"]
    assert len(out.retries) == 2


def test_range_ignored_skips_the_bytes_already_there(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    server = BlobServer(blob, [Step(cut_after=cut), Step(ignore_range=True)])
    out = run_fetch(tmp_path, server)
    assert out.error is None, out.error
    assert out.done and out.data == blob  # not the first 40 % twice
    ranges = [s.headers.get("Range") for s in server.blob_requests()]
    assert ranges == [None, f"bytes={cut}-"]


def test_range_ignored_and_cut_again_still_ends_right(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    plan = [Step(cut_after=cut), Step(ignore_range=True, cut_after=cut // 2), Step()]
    server = BlobServer(blob, plan)
    out = run_fetch(tmp_path, server)
    assert out.error is None, out.error
    assert out.data == blob


def test_416_restarts_without_range(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    server = BlobServer(blob, [Step(cut_after=cut), Step(range_416=True)])
    out = run_fetch(tmp_path, server)
    assert out.error is None, out.error
    assert out.done and out.data == blob
    ranges = [s.headers.get("Range") for s in server.blob_requests()]
    assert ranges == [None, f"bytes={cut}-", None]


def test_206_from_another_offset_is_not_appended(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    server = BlobServer(blob, [Step(cut_after=cut), Step(wrong_range_start=True)])
    out = run_fetch(tmp_path, server)
    assert out.error is None, out.error
    assert out.data == blob
    assert len(server.blob_requests()) == 3


def test_server_error_is_retried(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(status=503), Step(status=500)])
    out = run_fetch(tmp_path, server)
    assert out.error is None, out.error
    assert out.data == blob
    assert len(out.retries) == 2


def test_retry_waits_delay_times_attempt(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(status=503)] * 3)
    started = time.monotonic()
    out = run_fetch(tmp_path, server, Retry(attempts=5, delay=0.1, read_timeout=5))
    elapsed = time.monotonic() - started
    assert out.error is None
    assert len(out.retries) == 3
    assert elapsed >= 0.1 + 0.2 + 0.3 - 0.05  # 0.1 s x attempt 1, 2, 3


def test_redirect_to_another_host_gets_no_authorization(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob)

    def plan_redirect() -> None:
        server.plan = [Step(redirect=f"http://localhost:{server.port}/cdn/{server.digest}")]

    out = run_fetch_with(tmp_path, server, plan_redirect, header="Bearer secret-token")
    assert out.error is None, out.error
    assert out.data == blob
    first, cdn = server.seen
    assert first.headers.get("Authorization") == "Bearer secret-token"
    assert cdn.path == f"/cdn/{server.digest}"
    assert "Authorization" not in cdn.headers


def run_fetch_with(
    tmp_path: Path, server: BlobServer, before: Callable[[], None], header: str = ""
) -> Outcome:
    """run_fetch, calling *before* once the server's port is known."""
    original = server.handle

    async def handle(request: web.Request) -> web.StreamResponse:
        if not server.seen:
            before()
        return await original(request)

    server.handle = handle  # type: ignore[method-assign]
    return run_fetch(tmp_path, server, header=header)


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
def test_more_bytes_than_size_fail_at_once(tmp_path: Path, blob: bytes, chunked: bool) -> None:
    server = BlobServer(blob, [Step(extra=b"x" * 100_000, chunked=chunked)] * 5)
    out = run_fetch(tmp_path, server)
    assert isinstance(out.error, InvalidArgument), out.error
    assert "unexpected size" in str(out.error)
    assert server.digest in str(out.error)
    assert len(server.blob_requests()) == 1  # not retried
    assert out.retries == []
    assert len(out.data) <= SIZE
    assert not out.done


def test_descriptor_smaller_than_blob_fails_at_once(tmp_path: Path, blob: bytes) -> None:
    out = run_fetch(tmp_path, BlobServer(blob), size=SIZE - 1)
    assert isinstance(out.error, InvalidArgument)
    assert "unexpected size" in str(out.error)
    assert out.retries == [] and not out.done


def test_more_bytes_after_a_resume_fail(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    server = BlobServer(blob, [Step(cut_after=cut), Step(extra=b"y" * 10)])
    out = run_fetch(tmp_path, server)
    assert isinstance(out.error, InvalidArgument)
    assert "unexpected size" in str(out.error)
    assert len(out.data) <= SIZE


def test_short_body_is_retried_then_fails_naming_the_blob(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(short=1000, ignore_range=True)] * 10)
    out = run_fetch(tmp_path, server, Retry(attempts=3, delay=0.0, read_timeout=5))
    assert isinstance(out.error, Unavailable), out.error
    assert server.digest in str(out.error)
    assert not out.done


def test_digest_mismatch(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(corrupt=True)])
    out = run_fetch(tmp_path, server)
    assert isinstance(out.error, DigestMismatch), out.error
    assert out.error.resumed is False
    message = str(out.error)
    assert f"127.0.0.1:{server.port}" in message
    assert f"filesystem layer verification failed for digest {server.digest}" in message
    assert not out.done
    assert len(server.blob_requests()) == 1


def test_digest_mismatch_after_a_resume_says_so(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    server = BlobServer(blob, [Step(cut_after=cut, corrupt=True)])
    out = run_fetch(tmp_path, server)
    assert isinstance(out.error, DigestMismatch), out.error
    assert out.error.resumed is True
    assert not out.done


def test_attempts_exhausted_is_unavailable_naming_the_blob(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(cut_after=10)] * 10)
    retry = Retry(attempts=3, delay=0.0, read_timeout=5)
    out = run_fetch(tmp_path, server, retry)
    assert isinstance(out.error, Unavailable), out.error
    message = str(out.error)
    assert server.digest in message
    assert f"127.0.0.1:{server.port}" in message
    assert "3 attempts" in message
    assert len(server.blob_requests()) == 3
    assert len(out.retries) == 2
    assert not out.done


def test_attempts_exhausted_on_errors(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(status=500)] * 10)
    out = run_fetch(tmp_path, server, Retry(attempts=2, delay=0.0, read_timeout=5))
    assert isinstance(out.error, Unavailable)
    assert server.digest in str(out.error)
    assert len(server.blob_requests()) == 2


def test_fetch_small_checks_size_and_digest(tmp_path: Path) -> None:
    config = b'{"architecture": "amd64", "os": "linux"}'
    what = "image config"

    async def body(base: str) -> list[BaseException | bytes]:
        out: list[BaseException | bytes] = []
        async with aiohttp.ClientSession() as http:
            repo = repository(http, base)
            cases = [
                Descriptor("c", digest_of(config), len(config)),  # right
                Descriptor("c", digest_of(config), len(config) + 1),  # size lies
                Descriptor("c", digest_of(config), 100_000_000),  # over the limit
            ]
            for desc in cases:
                try:
                    out.append(await fetch_small(repo, desc, 1 << 20, what))
                except Exception as exc:
                    out.append(exc)
        return out

    right, wrong_size, huge = asyncio.run(serving(BlobServer(config), body))
    assert right == config
    assert isinstance(wrong_size, InvalidArgument) and "unexpected size" in str(wrong_size)
    assert isinstance(huge, InvalidArgument) and "too large" in str(huge)

    server = BlobServer(config, [Step(corrupt=True)])

    async def corrupt(base: str) -> BaseException | None:
        async with aiohttp.ClientSession() as http:
            try:
                await fetch_small(
                    repository(http, base),
                    Descriptor("c", server.digest, len(config)),
                    1 << 20,
                    what,
                )
            except Exception as exc:
                return exc
        return None

    error = asyncio.run(serving(server, corrupt))
    assert isinstance(error, InvalidArgument)
    assert f"image config verification failed for digest {server.digest}" in str(error)
    assert str(error).startswith(f"127.0.0.1:{server.port}")


# -- the spool and its reader ------------------------------------------------------------------


class ReaderThread(threading.Thread):
    """Reads a spool to its end (or its error) in a thread, as the layer worker does."""

    def __init__(self, spool: Spool, stop: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.spool, self.stop = spool, stop or threading.Event()
        self.data = b""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.spool.reader(self.stop) as reader:
                while chunk := reader.read(4096):
                    self.data += chunk
        except BaseException as exc:
            self.error = exc


def test_spool_reader_sees_the_end_only_after_finish(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    reader = ReaderThread(spool)
    reader.start()
    try:
        spool.write(b"a" * 5000)
        spool.write(b"b" * 5000)
        reader.join(0.5)
        assert reader.is_alive(), "the reader ended before the blob was finished"
        spool.finish()
        reader.join(10)
        assert not reader.is_alive()
        assert reader.error is None
        assert reader.data == b"a" * 5000 + b"b" * 5000
    finally:
        spool.fail(RuntimeError("test over"))
        reader.join(10)


def test_spool_reader_raises_after_fail(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    reader = ReaderThread(spool)
    reader.start()
    spool.write(b"c" * 1000)
    reader.join(0.3)
    assert reader.is_alive()
    problem = DigestMismatch("blob sha256:… does not match", False)
    spool.fail(problem)
    reader.join(10)
    assert not reader.is_alive()
    assert reader.error is problem


def test_spool_reader_is_cancelled_by_its_stop_event(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s")
    stop = threading.Event()
    reader = ReaderThread(spool, stop)
    reader.start()
    try:
        spool.write(b"d" * 100)
        reader.join(0.3)
        assert reader.is_alive()
        stop.set()
        reader.join(10)
        assert not reader.is_alive()
        assert isinstance(reader.error, Cancelled)
    finally:
        spool.fail(RuntimeError("test over"))
        reader.join(10)


def test_reader_of_a_corrupt_download_never_sees_its_end(tmp_path: Path, blob: bytes) -> None:
    server = BlobServer(blob, [Step(corrupt=True)])
    spool = Spool(tmp_path / "spool")
    reader = ReaderThread(spool)
    reader.start()

    async def body(base: str) -> BaseException | None:
        async with aiohttp.ClientSession() as http:
            desc = Descriptor(LAYER, server.digest, SIZE)
            try:
                await fetch(
                    repository(http, base), desc, spool, lambda n: None, lambda s: None, FAST
                )
            except Exception as exc:
                return exc
        return None

    try:
        error = asyncio.run(serving(server, body))
        assert isinstance(error, DigestMismatch)
        reader.join(0.5)
        assert reader.is_alive(), "the reader reached the end of an unverified blob"
        spool.fail(error)
        reader.join(10)
        assert reader.error is error
        assert len(reader.data) <= SIZE
    finally:
        spool.fail(RuntimeError("test over"))
        reader.join(10)


def test_reader_of_a_resumed_download_reads_the_blob_once(tmp_path: Path, blob: bytes) -> None:
    cut = int(SIZE * 0.4)
    server = BlobServer(blob, [Step(cut_after=cut), Step(ignore_range=True)])
    spool = Spool(tmp_path / "spool")
    reader = ReaderThread(spool)
    reader.start()

    async def body(base: str) -> BaseException | None:
        async with aiohttp.ClientSession() as http:
            desc = Descriptor(LAYER, server.digest, SIZE)
            try:
                await fetch(
                    repository(http, base), desc, spool, lambda n: None, lambda s: None, FAST
                )
            except Exception as exc:
                return exc
        return None

    try:
        assert asyncio.run(serving(server, body)) is None
        reader.join(10)
        assert not reader.is_alive() and reader.error is None
        assert reader.data == blob
    finally:
        spool.fail(RuntimeError("test over"))
        reader.join(10)
