"""Pulls from a registry that misbehaves: each fault ends in a clear error and leaves nothing.

Every case pulls a kit-made image (a busybox layer and a second layer, both unique to the test so
nothing is ever "Already exists") from the hostile registry through the CLI, and checks: the exit
status, that the message names the registry (and the digest where Docker's does), that no image,
tag or layer directory appeared, that ``tmp/`` holds no ``pull-*`` directory, and that a deep fsck
finds nothing. Then the registry is set right and the same pull succeeds and the image runs: a
failed pull poisons nothing.

``PlannedRegistry`` adds one thing to the kit's hostile registry: a *plan*, a list of behaviours
given to successive GETs of one key (cut the first, ignore Range on the second …).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import re
import secrets
import subprocess
import tarfile
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest

from tests.registry.daemonkit import PullDaemon, needs_root, pulld
from tests.registry.hostile import Behaviour, HostileRegistry
from tests.registry.images import (
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    Image,
    PrebuiltLayer,
    busybox_rootfs_tar,
    digest_of,
    layer,
    make_image,
    make_index,
    oversized_manifest,
)

pytestmark = [needs_root, pytest.mark.slow]
__all__ = ["pulld"]

PULL_TIMEOUT = 90
SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"


class PlannedRegistry(HostileRegistry):
    """The hostile registry, with a list of behaviours for successive GETs of a key."""

    def __init__(self, **kw: bool) -> None:
        super().__init__(**kw)
        self.plans: dict[str, list[Behaviour]] = {}

    def plan(self, key: str, steps: Sequence[Behaviour]) -> None:
        """Answer the next GETs of *key* as *steps* say, one each, then as ``behave`` says."""
        with self._lock:
            self.plans[key] = list(steps)

    def _behaviour(self, key: str, method: str) -> Behaviour:
        with self._lock:
            steps = self.plans.get(key)
            if steps and method == "GET":
                return steps.pop(0)
            if steps:
                return steps[0]
        return super()._behaviour(key, method)


@pytest.fixture
def server() -> Iterator[PlannedRegistry]:
    """A started planned hostile registry, stopped after the test."""
    with PlannedRegistry() as reg:
        yield reg


@pytest.fixture(autouse=True)
def store_stays_consistent(pulld: PullDaemon) -> Iterator[None]:
    """After each test: a deep fsck finds nothing and no pull left its work directory."""
    yield
    assert pull_dirs(pulld) == []
    problems = pulld.fsck(deep=True)
    assert problems == [], f"fsck found problems: {problems}"


# -- images ------------------------------------------------------------------------------------


@functools.cache
def _busybox() -> bytes:
    return busybox_rootfs_tar()


def busybox_layer(token: str) -> bytes:
    """The busybox layer with /etc/marker holding *token* (so its digest is the test's own)."""
    buf = io.BytesIO(_busybox())
    data = f"{token}\n".encode()
    with tarfile.open(fileobj=buf, mode="a") as tar:
        info = tarfile.TarInfo("etc/marker")
        info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class Case:
    """One test's image on the registry, and how to name it."""

    server: HostileRegistry
    name: str
    tag: str
    image: Image
    token: str

    @property
    def ref(self) -> str:
        """HOST/NAME:TAG."""
        return f"{self.server.host}/{self.name}:{self.tag}"

    @property
    def base(self) -> str:
        """The busybox layer blob's digest."""
        return str(self.image.layers[0]["digest"])

    @property
    def second(self) -> str:
        """The second layer blob's digest."""
        return str(self.image.layers[1]["digest"])

    def base_size(self) -> int:
        """The busybox layer blob's size."""
        return int(str(self.image.layers[0]["size"]))


def good_image(token: str, platform: str = "linux/amd64") -> Image:
    """A busybox layer and a second layer, unique to *token*."""
    second = layer({"etc/second": f"second {token}\n".encode()})
    return make_image([busybox_layer(token), second], platform=platform)


def new_case(server: HostileRegistry, label: str) -> Case:
    """A fresh image served as ``faults/LABEL-<hex>:v1`` (no LABEL is a word a test looks for)."""
    token = secrets.token_hex(6)
    image = good_image(token)
    name = f"faults/{label}-{token[:6]}"
    server.add_image(name, "v1", image)
    return Case(server, name, "v1", image, token)


# -- what a failed pull must leave (nothing) and what a good one gives ---------------------------


def pull_dirs(pulld: PullDaemon) -> list[str]:
    """``pull-*`` work directories in the data root's tmp/."""
    tmp = pulld.daemon.data_root / "tmp"
    return sorted(p.name for p in tmp.glob("pull-*")) if tmp.is_dir() else []


def staged_tars(pulld: PullDaemon) -> list[str]:
    """Layer tars still being staged (``.<id>.tar.tmp``)."""
    tars = pulld.daemon.data_root / "layertars"
    return sorted(p.name for p in tars.glob(".*.tmp")) if tars.is_dir() else []


@dataclass
class Snapshot:
    """Images and layer directories of the daemon at one time."""

    ids: set[str]
    layers: set[str]

    @classmethod
    def take(cls, pulld: PullDaemon) -> Snapshot:
        return cls({i["Id"] for i in pulld.images()}, {p.name for p in pulld.layer_dirs()})


def pull(pulld: PullDaemon, ref: str, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """``dockyard pull ARGS REF``; the process and its stdout+stderr."""
    proc = pulld.cli("pull", *args, ref, timeout=PULL_TIMEOUT)
    return proc, proc.stdout + proc.stderr


def assert_failed_clean(
    pulld: PullDaemon, case: Case, before: Snapshot, ref: str, *expected: str
) -> str:
    """Pull *ref*: it must fail saying *expected*, naming the registry, and leave nothing."""
    proc, out = pull(pulld, ref)
    return assert_clean_failure(pulld, case, before, ref, proc, out, *expected)


def assert_clean_failure(
    pulld: PullDaemon,
    case: Case,
    before: Snapshot,
    ref: str,
    proc: subprocess.CompletedProcess[str],
    out: str,
    *expected: str,
) -> str:
    """The pull of *ref* failed saying *expected*, naming the registry, and left nothing."""
    assert proc.returncode != 0, f"pull of {ref} succeeded:\n{out}"
    assert "Traceback" not in out, out
    for text in expected:
        assert text in out, f"{text!r} not in the output:\n{out}\n{pulld.tail()}"
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    assert errors, out
    long = [line[:600] for line in errors if len(line) >= 1000]
    assert not long, f"an unreadable error (over 1000 characters): {long}"
    named = [line for line in errors if case.server.host in line]
    assert named, f"the error does not name the registry:\n{out}"
    after = Snapshot.take(pulld)
    assert after.ids == before.ids, "a failed pull left an image"
    assert after.layers == before.layers, "a failed pull left layer directories"
    assert not pulld.has_image(ref)
    assert not pulld.has_image(case.image.config_digest)
    refs = [
        t for i in pulld.images() for t in (i.get("RepoTags") or []) + (i.get("RepoDigests") or [])
    ]
    assert not [t for t in refs if case.name in t], refs
    assert pull_dirs(pulld) == [], "tmp/pull-* left after the job"
    assert staged_tars(pulld) == []
    problems = pulld.fsck(deep=True)
    assert problems == [], f"fsck after a failed pull: {problems}"
    assert pulld.daemon.proc.poll() is None, "the daemon died"
    return out


def assert_pulls_and_runs(pulld: PullDaemon, case: Case, ref: str | None = None) -> str:
    """Pull *ref* (the case's): it succeeds, is the case's image, and runs; then remove it."""
    ref = ref or case.ref
    proc, out = pull(pulld, ref)
    assert proc.returncode == 0, f"pull of {ref} failed:\n{out}\n{pulld.tail()}"
    try:
        assert pulld.image(ref)["Id"] == case.image.config_digest
        ran = pulld.ok("run", "--rm", ref, "cat", "/etc/marker", timeout=60)
        assert ran.strip() == case.token
        assert pulld.ok("run", "--rm", ref, "echo", "ok", timeout=60).strip() == "ok"
    finally:
        pulld.rmi(ref, case.image.config_digest)
    return out


def digest_hex(text: str) -> str:
    """``sha256:<hex>`` → ``<hex>``, for messages that print one or the other."""
    return text.split(":", 1)[1]


# -- blob bytes --------------------------------------------------------------------------------


def test_altered_layer_bytes(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "altered-layer")
    before = Snapshot.take(pulld)
    server.behave(case.base, Behaviour(corrupt=True))
    assert_failed_clean(
        pulld, case, before, case.ref,
        f"filesystem layer verification failed for digest {case.base}",
    )  # fmt: skip
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


def test_altered_second_layer_by_digest(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "altered-second")
    before = Snapshot.take(pulld)
    server.behave(case.second, Behaviour(corrupt=True))
    by_digest = f"{server.host}/{case.name}@{case.image.digest}"
    assert_failed_clean(
        pulld, case, before, by_digest,
        f"filesystem layer verification failed for digest {case.second}",
    )  # fmt: skip
    server.behave(case.second, Behaviour())
    assert_pulls_and_runs(pulld, case, by_digest)


def test_content_length_longer_than_body(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "short-body")
    before = Snapshot.take(pulld)
    server.behave(case.base, Behaviour(length_delta=1000))
    proc, out = pull(pulld, case.ref)
    if proc.returncode != 0:  # a clear error, naming the registry and the blob
        assert_clean_failure(pulld, case, before, case.ref, proc, out, case.base, "unexpected size")
    else:
        assert pulld.image(case.ref)["Id"] == case.image.config_digest
        pulld.rmi(case.ref, case.image.config_digest)
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


def test_content_length_shorter_than_body(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "long-body")
    before = Snapshot.take(pulld)
    server.behave(case.base, Behaviour(length_delta=-1000))
    proc, out = pull(pulld, case.ref)
    if proc.returncode != 0:  # a clear error, naming the registry and the blob
        assert_clean_failure(pulld, case, before, case.ref, proc, out, case.base)
    else:
        assert pulld.image(case.ref)["Id"] == case.image.config_digest
        pulld.rmi(case.ref, case.image.config_digest)
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


def test_body_longer_than_descriptor_size(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "extra-bytes")
    before = Snapshot.take(pulld)
    server.behave(case.base, Behaviour(extra=b"\0" * 4096))
    started = time.monotonic()
    assert_failed_clean(pulld, case, before, case.ref, case.base, "unexpected size")
    assert time.monotonic() - started < 60
    # refused at once, not retried
    assert len(server.requests_for(f"/blobs/{case.base}", "GET")) == 1
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


# -- resuming ----------------------------------------------------------------------------------


def ranges_asked(server: HostileRegistry, digest: str) -> list[tuple[str, int]]:
    """(Range header, status) of each GET of blob *digest*."""
    return [
        (r.headers.get("range", ""), r.status)
        for r in server.requests_for(f"/blobs/{digest}", "GET")
    ]


def test_connection_dropped_mid_blob_resumes(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "dropped")
    cut = case.base_size() * 4 // 10
    server.behave(case.base, Behaviour(times=2, cut_after=cut))
    assert_pulls_and_runs(pulld, case)
    asked = ranges_asked(server, case.base)
    assert len(asked) == 3, asked
    assert asked[0][0] == ""
    assert re.fullmatch(r"bytes=\d+-", asked[1][0]), asked
    assert int(asked[1][0][6:-1]) == cut, asked
    assert asked[1][1] == 206 and asked[2][1] == 206, asked


def test_range_ignored_restarts_from_zero(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "range-ignored")
    cut = case.base_size() * 4 // 10
    server.plan(case.base, [Behaviour(cut_after=cut), Behaviour(ignore_range=True)])
    assert_pulls_and_runs(pulld, case)
    asked = ranges_asked(server, case.base)
    assert asked[1] == (f"bytes={cut}-", 200), asked


def test_range_416_restarts(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "range-416")
    cut = case.base_size() * 4 // 10
    server.plan(case.base, [Behaviour(cut_after=cut), Behaviour(range_416=True)])
    assert_pulls_and_runs(pulld, case)
    asked = ranges_asked(server, case.base)
    assert asked[1] == (f"bytes={cut}-", 416), asked
    assert asked[-1][1] in (200, 206), asked


def test_every_attempt_dropped_fails_clean(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "always-dropped")
    before = Snapshot.take(pulld)
    server.behave(case.base, Behaviour(cut_after=1000))
    assert_failed_clean(pulld, case, before, case.ref, case.base)
    assert len(server.requests_for(f"/blobs/{case.base}", "GET")) == 5  # Docker's 5 attempts
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


# -- redirects ---------------------------------------------------------------------------------


def test_redirect_to_another_host_gets_no_credentials(pulld: PullDaemon) -> None:
    with PlannedRegistry(require_bearer=True) as server:
        case = new_case(server, "cdn-host")
        cdn = server.cdn_url(case.base, host="localhost")
        server.behave(case.base, Behaviour(redirect=cdn))
        assert_pulls_and_runs(pulld, case)
        sent = server.requests_for(f"/cdn/{case.base}", "GET")
        assert sent, "the redirect was not followed"
        assert all("authorization" not in r.headers for r in sent), [r.headers for r in sent]
        own = [r for r in server.requests_for(f"/blobs/{case.base}", "GET") if r.status == 307]
        assert own and own[0].headers.get("authorization") == f"Bearer {server.token}"


def test_redirect_to_https_on_a_plain_port(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "cdn-tls")
    before = Snapshot.take(pulld)
    target = server.cdn_url(case.base, host="127.0.0.1").replace("http://", "https://")
    server.behave(case.base, Behaviour(redirect=target))
    assert_failed_clean(pulld, case, before, case.ref, "redirect", case.base)
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


@pytest.mark.parametrize(
    "target", ["ftp://127.0.0.1:21/blob", "file:///etc/passwd", "gopher://127.0.0.1/x"]
)
def test_redirect_to_another_scheme_is_refused(
    pulld: PullDaemon, server: PlannedRegistry, target: str
) -> None:
    case = new_case(server, "cdn-scheme")
    before = Snapshot.take(pulld)
    server.behave(case.base, Behaviour(redirect=target))
    out = assert_failed_clean(pulld, case, before, case.ref, "redirect", case.base)
    assert "refused" in out
    server.behave(case.base, Behaviour())
    assert_pulls_and_runs(pulld, case)


# -- manifests and config ----------------------------------------------------------------------


def test_docker_content_digest_lie(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "header-lie")
    before = Snapshot.take(pulld)
    lie = "sha256:" + hashlib.sha256(b"another manifest").hexdigest()
    server.behave(case.tag, Behaviour(digest_header=lie))
    assert_failed_clean(pulld, case, before, case.ref, "manifest verification failed", lie)
    server.behave(case.tag, Behaviour())
    assert_pulls_and_runs(pulld, case)


def test_pull_by_digest_with_altered_manifest(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "by-digest")
    before = Snapshot.take(pulld)
    doc = json.loads(case.image.manifest)
    other = layer({"etc/other": case.token.encode()})
    doc["layers"][1]["digest"] = server.add_blob(zlib_gzip(other))
    altered = json.dumps(doc, indent=3).encode()
    server.add_manifest(case.name, case.image.digest, altered, DOCKER_MANIFEST)
    by_digest = f"{server.host}/{case.name}@{case.image.digest}"
    assert_failed_clean(
        pulld, case, before, by_digest,
        f"manifest verification failed for digest {case.image.digest}",
    )  # fmt: skip
    server.add_manifest(case.name, case.image.digest, case.image.manifest, DOCKER_MANIFEST)
    assert_pulls_and_runs(pulld, case, by_digest)


def zlib_gzip(data: bytes) -> bytes:
    """*data* gzip-compressed (any valid gzip will do)."""
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    return comp.compress(data) + comp.flush()


def test_manifest_over_4_mib(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "big")
    before = Snapshot.take(pulld)
    big = oversized_manifest(case.image, 5 << 20)
    server.add_manifest(case.name, "big", big, DOCKER_MANIFEST)
    ref = f"{server.host}/{case.name}:big"
    assert_failed_clean(pulld, case, before, ref, "manifest too large")
    server.add_manifest(case.name, "big", case.image.manifest, DOCKER_MANIFEST)
    assert_pulls_and_runs(pulld, case, ref)


@pytest.mark.parametrize("how", ["one-too-many", "one-too-few", "wrong-one", "swapped"])
def test_diff_ids_disagree_with_layers(
    pulld: PullDaemon, server: PlannedRegistry, how: str
) -> None:
    case = new_case(server, f"diffids-{how}")
    before = Snapshot.take(pulld)
    ids = list(case.image.diff_ids)
    if how == "one-too-many":
        ids.append(digest_of(b"no such layer"))
    elif how == "one-too-few":
        ids = ids[:1]
    elif how == "wrong-one":
        ids[1] = digest_of(layer({"etc/second": b"something else\n"}))
    else:
        ids.reverse()
    lying = make_image(
        [busybox_layer(case.token), layer({"etc/second": f"second {case.token}\n".encode()})],
        config_extra={"rootfs": {"type": "layers", "diff_ids": ids}},
    )
    assert [x["digest"] for x in lying.layers] == [case.base, case.second]
    server.add_image(case.name, case.tag, lying)
    assert_failed_clean(
        pulld, case, before, case.ref, "layers from manifest don't match image configuration"
    )
    assert not pulld.has_image(lying.config_digest)
    server.add_image(case.name, case.tag, case.image)
    assert_pulls_and_runs(pulld, case)


def test_altered_config(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "altered-config")
    before = Snapshot.take(pulld)
    server.behave(case.image.config_digest, Behaviour(corrupt=True))
    assert_failed_clean(
        pulld, case, before, case.ref,
        f"image config verification failed for digest {case.image.config_digest}",
    )  # fmt: skip
    server.behave(case.image.config_digest, Behaviour())
    assert_pulls_and_runs(pulld, case)


def test_schema1_manifest(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "old-kind")
    before = Snapshot.take(pulld)
    doc = {
        "schemaVersion": 1,
        "name": case.name,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": case.base}],
        "history": [{"v1Compatibility": "{}"}],
        "signatures": [],
    }
    server.add_manifest(case.name, "old", json.dumps(doc).encode(), SCHEMA1)
    ref = f"{server.host}/{case.name}:old"
    assert_failed_clean(pulld, case, before, ref, "schema 1")
    server.add_manifest(case.name, "old", case.image.manifest, DOCKER_MANIFEST)
    assert_pulls_and_runs(pulld, case, ref)


def test_index_without_this_platform(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "no-amd64")
    before = Snapshot.take(pulld)
    others = {p: good_image(case.token, p) for p in ("linux/arm64", "linux/s390x")}
    server.add_image(case.name, "multi", make_index(others))
    ref = f"{server.host}/{case.name}:multi"
    assert_failed_clean(
        pulld,
        case,
        before,
        ref,
        "no matching manifest for linux/amd64 in the manifest list entries",
    )
    server.add_image(case.name, "multi", make_index({"linux/amd64": case.image, **others}))
    assert_pulls_and_runs(pulld, case, ref)


# -- a decompression bomb ----------------------------------------------------------------------


def trailing_zeros_bomb(head: bytes, zeros: int) -> PrebuiltLayer:
    """A gzip layer: the tar *head*, then *zeros* zero bytes after its end (as many gzip
    members of 1 MiB of zeros each, ~1 KiB compressed), with its true diff_id."""
    mib = 1 << 20
    assert zeros % mib == 0
    member = zlib_gzip(bytes(mib))
    blob = zlib_gzip(head) + member * (zeros // mib)
    sha = hashlib.sha256(head)
    block = bytes(mib)
    for _ in range(zeros // mib):
        sha.update(block)
    return PrebuiltLayer(blob, DOCKER_LAYER + ".gzip", "sha256:" + sha.hexdigest())


def test_gzip_bomb_after_the_tar(pulld: PullDaemon, server: PlannedRegistry) -> None:
    case = new_case(server, "bomb")
    before = Snapshot.take(pulld)
    head = layer({"etc/bomb": b"small\n"})
    bomb = trailing_zeros_bomb(head, 2 << 30)  # 2 GiB of zeros in about 2 MB
    assert len(bomb.blob) < 8 << 20
    image = make_image([busybox_layer(case.token), bomb])
    server.add_image(case.name, "bomb", image)
    ref = f"{server.host}/{case.name}:bomb"
    bomb_digest = digest_of(bomb.blob)
    started = time.monotonic()
    proc, out = pull(pulld, ref)
    took = time.monotonic() - started
    assert proc.returncode != 0, out
    assert took < 30, f"the bomb took {took:.1f} s to refuse"
    assert server.host in out and bomb_digest in out, out
    assert "tar archive" in out, out  # data after the end of the archive is refused
    assert_clean_failure(pulld, case, before, ref, proc, out, bomb_digest)
    assert not pulld.has_image(image.config_digest)
    server.add_image(case.name, "bomb", case.image)
    assert_pulls_and_runs(pulld, case, ref)
