"""Tests of the registry kit itself (not of the engine): registries, tokens, hostile, builders."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import socket
import ssl
import tarfile
import threading
import time
import urllib.parse
import zlib
from pathlib import Path

import pytest
import zstandard

from tests.registry.conftest import needs_skopeo, needs_umoci
from tests.registry.hostile import Behaviour, HostileRegistry
from tests.registry.images import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Image,
    busybox_rootfs_tar,
    gzip_bomb,
    layer,
    make_image,
    make_index,
    oversized_manifest,
    pull_with_skopeo,
    push_image,
    push_with_skopeo,
    umoci_layout,
)
from tests.registry.registries import (
    KINDS,
    Registry,
    RegistryClient,
    missing_reason,
    parse_challenge,
    running_registry,
)
from tests.registry.tokenserver import TokenServer

BLOB = bytes(range(256)) * 40  # 10240 bytes


def raw(
    port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh socket, read to EOF: (status, lowercased headers, raw body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if method == "HEAD" and b"\r\n\r\n" in data:
                break
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), hdrs, body


def sha(data: bytes) -> str:
    """``sha256:<hex>`` computed here, independently of the kit."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def jwt_part(token: str, index: int) -> dict[str, object]:
    """Decode one JSON part (0 header, 1 claims) of a JWT."""
    part = token.split(".")[index]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def small_image() -> Image:
    """A two-layer docker image: busybox and one file."""
    return make_image([busybox_rootfs_tar(), layer({"etc/kit": b"kit\n"})])


# -- real registries ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_registry_kind_starts_answers_and_stops(kind: str) -> None:
    """Each kind answers /v2/ (401 with its challenge when auth is on) and cleans up on stop."""
    if missing_reason(kind):
        pytest.skip(str(missing_reason(kind)))
    with running_registry(kind) as reg:
        status, headers, _ = raw(reg.port, "/v2/")
        assert reg.url == f"http://{reg.host}" and reg.host == f"127.0.0.1:{reg.port}"
        if kind == "plain":
            assert status == 200 and reg.user is None
        else:
            assert status == 401
            scheme, params = parse_challenge(headers["www-authenticate"])
            assert scheme == ("basic" if kind == "basic" else "bearer")
            if kind == "token":
                assert reg.token_server is not None
                assert params["realm"] == reg.token_server.realm
                assert params["service"] == reg.token_server.service
        proc, base, port = reg.proc, reg.base, reg.port
    assert proc.poll() is not None and not base.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_basic_registry_accepts_credentials(basic_registry: Registry) -> None:
    """The htpasswd registry accepts its user and refuses a wrong password."""

    good = base64.b64encode(f"{basic_registry.user}:{basic_registry.password}".encode()).decode()
    bad = base64.b64encode(f"{basic_registry.user}:wrong".encode()).decode()
    assert raw(basic_registry.port, "/v2/", headers={"Authorization": f"Basic {good}"})[0] == 200
    assert raw(basic_registry.port, "/v2/", headers={"Authorization": f"Basic {bad}"})[0] == 401


def test_token_flow_gets_a_token_the_registry_accepts(
    token_registry: Registry, small_image: Image
) -> None:
    """Challenge → token from the realm with basic credentials → the manifest with the token."""
    ts = token_registry.token_server
    assert ts is not None
    push_image(small_image, token_registry, "kit/token", "v1")
    path = "/v2/kit/token/manifests/v1"
    accept = {"Accept": DOCKER_MANIFEST}
    status, headers, _ = raw(token_registry.port, path, headers=accept)
    scheme, params = parse_challenge(headers["www-authenticate"])
    assert status == 401 and scheme == "bearer"
    assert params["scope"] == "repository:kit/token:pull"
    query = urllib.parse.urlencode({"service": params["service"], "scope": params["scope"]})
    ts_port = int(urllib.parse.urlsplit(params["realm"]).port or 0)
    creds = base64.b64encode(f"{token_registry.user}:{token_registry.password}".encode()).decode()
    status, _, body = raw(ts_port, f"/token?{query}", headers={"Authorization": f"Basic {creds}"})
    token = json.loads(body)["token"]
    assert status == 200 and json.loads(body)["access_token"] == token
    header, claims = jwt_part(token, 0), jwt_part(token, 1)
    assert header["alg"] == "ES256" and isinstance(header["x5c"], list)
    assert claims["aud"] == ts.service and claims["iss"] == ts.issuer
    assert claims["access"] == [{"type": "repository", "name": "kit/token", "actions": ["pull"]}]
    status, headers, body = raw(
        token_registry.port, path, headers={**accept, "Authorization": f"Bearer {token}"}
    )
    assert status == 200 and sha(body) == small_image.digest
    assert ts.requests[-1].scopes == ["repository:kit/token:pull"]
    assert ts.requests[-1].user == token_registry.user
    bad = base64.b64encode(b"nobody:wrong").decode()
    assert raw(ts_port, f"/token?{query}", headers={"Authorization": f"Basic {bad}"})[0] == 401
    anon = json.loads(raw(ts_port, f"/token?{query}")[2])["token"]
    assert jwt_part(anon, 1)["access"] == []
    anon_auth = {**accept, "Authorization": f"Bearer {anon}"}
    assert raw(token_registry.port, path, headers=anon_auth)[0] == 401


def test_token_server_form_refresh_and_policy() -> None:
    """The OAuth2 form gives a refresh token that works; anonymous pull and a policy apply."""

    def policy(user: str | None, kind: str, name: str, actions: list[str]) -> list[str]:
        return [] if name == "secret" else [a for a in actions if user or a == "pull"]

    with TokenServer({"u": "p"}, anonymous_actions=("pull",)) as ts:
        port = int(urllib.parse.urlsplit(ts.url).port or 0)

        def post(form: dict[str, str]) -> tuple[int, dict[str, object]]:
            body = urllib.parse.urlencode(form)
            head = {"Content-Type": "application/x-www-form-urlencoded"}
            head["Content-Length"] = str(len(body))
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                req = "POST /token HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items())
                s.sendall((req + "\r\n" + body).encode())
                data = b"".join(iter(lambda: s.recv(65536), b""))
            head_part, _, payload = data.partition(b"\r\n\r\n")
            return int(head_part.split()[1]), json.loads(payload)

        scope = "repository:a/b:pull,push"
        form = {"grant_type": "password", "username": "u", "password": "p", "scope": scope}
        status, doc = post({**form, "service": ts.service, "access_type": "offline"})
        assert status == 200 and isinstance(doc["refresh_token"], str)
        refresh = {"grant_type": "refresh_token", "refresh_token": str(doc["refresh_token"])}
        status, again = post({**refresh, "scope": scope})
        access = jwt_part(str(again["access_token"]), 1)["access"]
        assert status == 200
        assert access == [{"type": "repository", "name": "a/b", "actions": ["pull", "push"]}]
        assert post({**form, "password": "wrong"})[0] == 401
        anon = json.loads(raw(port, "/token?" + urllib.parse.urlencode({"scope": scope}))[2])
        pull_only = [{"type": "repository", "name": "a/b", "actions": ["pull"]}]
        assert jwt_part(anon["token"], 1)["access"] == pull_only
        ts.policy = policy
        assert ts.grant("u", "repository:secret:pull") is None
        assert ts.grant(None, scope) == {"type": "repository", "name": "a/b", "actions": ["pull"]}
        assert [r.method for r in ts.requests] == ["POST", "POST", "POST", "GET"]


@needs_skopeo
@needs_umoci
def test_skopeo_copies_into_and_out_of_token_registry(
    token_registry: Registry, tmp_path: Path
) -> None:
    """A umoci layout goes in with --dest-creds (zstd too) and comes out with --src-creds."""

    assert token_registry.token_server is not None
    layout = umoci_layout(tmp_path / "layout", files={"etc/motd": b"hello\n"})
    # zstd first: skopeo's blob-info cache would otherwise substitute the gzip blob it pushed.
    push_with_skopeo(layout, token_registry, "kit/zstd", "v1", compress_format="zstd")
    push_with_skopeo(layout, token_registry, "kit/skopeo", "v1")
    asked = token_registry.token_server.scopes_asked()
    assert any(s.startswith("repository:kit/skopeo:") and "push" in s for s in asked)
    client = token_registry.client()
    zdoc = json.loads(client.manifest("kit/zstd", "v1").body)
    assert [d["mediaType"] for d in zdoc["layers"]] == [OCI_LAYER + "+zstd"]
    pulled = pull_with_skopeo(token_registry, "kit/skopeo", "v1", tmp_path / "out")
    index = json.loads((pulled / "index.json").read_text())
    pushed = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == pushed["manifests"][0]["digest"]
    with pytest.raises(RuntimeError, match="failed"):
        pull_with_skopeo(token_registry, "kit/skopeo", "v1", tmp_path / "x", creds="a:b")


def test_push_image_to_basic_and_plain(basic_registry: Registry, registry: Registry) -> None:
    """push_image seeds an image and an index; the registry serves them by tag and digest."""

    one = make_image([layer({"a": b"1"})], media="oci")
    two = make_image([layer({"b": b"2"})], media="oci", platform="linux/arm64/v8")
    index = make_index({"linux/amd64": one, "linux/arm64/v8": two})
    for reg in (basic_registry, registry):
        assert push_image(index, reg, "kit/multi", "latest") == index.digest
        resp = reg.client().manifest("kit/multi", "latest")
        assert resp.status == 200 and resp.headers["docker-content-digest"] == index.digest
        assert reg.client().manifest("kit/multi", two.digest).body == two.manifest
    anonymous = RegistryClient(basic_registry.url)
    assert anonymous.manifest("kit/multi", "latest").status == 401


# -- hostile registry --------------------------------------------------------------------------
@needs_skopeo
def test_hostile_serves_an_image_skopeo_copies(
    hostile: HostileRegistry, small_image: Image, tmp_path: Path
) -> None:
    """With no behaviour set, skopeo pulls a correct image from the hostile registry."""

    hostile.add_image("kit/bb", "latest", small_image)
    out = pull_with_skopeo(hostile.host, "kit/bb", "latest", tmp_path / "out")
    index = json.loads((out / "index.json").read_text())
    digest = index["manifests"][0]["digest"]
    manifest = json.loads((out / "blobs" / digest.replace(":", "/")).read_bytes())
    # The oci: transport converts to an OCI manifest and config: same layers and diff_ids.
    config_path = out / "blobs" / manifest["config"]["digest"].replace(":", "/")
    assert json.loads(config_path.read_bytes())["rootfs"]["diff_ids"] == small_image.diff_ids
    assert [d["digest"] for d in manifest["layers"]] == [d["digest"] for d in small_image.layers]
    assert hostile.requests[0].method == "TLS"  # skopeo tried HTTPS first
    assert hostile.requests_for("/v2/kit/bb/manifests/latest", "GET")
    assert len(hostile.requests_for("/v2/kit/bb/blobs/", "GET")) == 3


def test_hostile_body_breakage(hostile: HostileRegistry) -> None:
    """Cut bodies, lying lengths, corrupt bytes, extra bytes and a lying digest header."""
    digest = hostile.add_blob(BLOB)
    path = f"/v2/kit/x/blobs/{digest}"
    status, headers, body = raw(hostile.port, path)
    assert (status, body, headers["docker-content-digest"]) == (200, BLOB, digest)
    hostile.behave(digest, Behaviour(cut_after=1000, times=1))
    status, headers, body = raw(hostile.port, path)
    assert status == 200 and int(headers["content-length"]) == len(BLOB) and len(body) == 1000
    status, headers, body = raw(hostile.port, path, headers={"Range": "bytes=1000-"})
    assert status == 206 and body == BLOB[1000:]
    assert headers["content-range"] == f"bytes 1000-{len(BLOB) - 1}/{len(BLOB)}"
    assert hostile.requests_for(path)[-1].headers["range"] == "bytes=1000-"
    hostile.behave(digest, Behaviour(corrupt=True))
    body = raw(hostile.port, path)[2]
    assert len(body) == len(BLOB) and sha(body) != digest
    hostile.behave(digest, Behaviour(length_delta=100))
    status, headers, body = raw(hostile.port, path)
    assert int(headers["content-length"]) == len(BLOB) + 100 and body == BLOB
    hostile.behave(digest, Behaviour(length_delta=-100))
    status, headers, body = raw(hostile.port, path)
    assert int(headers["content-length"]) == len(BLOB) - 100 and body == BLOB
    hostile.behave(digest, Behaviour(extra=b"more"))
    status, headers, body = raw(hostile.port, path)
    assert int(headers["content-length"]) == len(body) == len(BLOB) + 4
    hostile.behave(digest, Behaviour(digest_header="sha256:" + "1" * 64))
    assert raw(hostile.port, path)[1]["docker-content-digest"] == "sha256:" + "1" * 64
    hostile.behave(digest, Behaviour(status=500, times=2))
    assert [raw(hostile.port, path)[0] for _ in range(3)] == [500, 500, 200]


def test_hostile_range_redirect_and_stall(hostile: HostileRegistry) -> None:
    """Ignored Range, 416, a redirect to another host name, and a stall after the headers."""
    digest = hostile.add_blob(BLOB)
    path = f"/v2/kit/x/blobs/{digest}"
    hostile.behave(digest, Behaviour(ignore_range=True))
    status, _, body = raw(hostile.port, path, headers={"Range": "bytes=10-"})
    assert status == 200 and body == BLOB
    hostile.behave(digest, Behaviour(range_416=True))
    status, headers, _ = raw(hostile.port, path, headers={"Range": "bytes=10-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(BLOB)}"
    target = hostile.cdn_url(digest)
    assert target.startswith(f"http://localhost:{hostile.port}/cdn/")
    hostile.behave(digest, Behaviour(redirect=target))
    status, headers, _ = raw(hostile.port, path, headers={"Authorization": "Bearer t"})
    assert status == 307 and headers["location"] == target
    assert raw(hostile.port, urllib.parse.urlsplit(target).path)[2] == BLOB
    cdn = hostile.requests_for("/cdn/")[-1]
    assert cdn.headers["host"] == f"127.0.0.1:{hostile.port}"
    assert "authorization" not in cdn.headers
    hostile.behave(digest, Behaviour(stall=1.0, stall_after=10))
    with socket.create_connection(("127.0.0.1", hostile.port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        start, data = time.monotonic(), b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 10:
            data += s.recv(65536)
        assert time.monotonic() - start < 0.8
        while len(data.partition(b"\r\n\r\n")[2]) < len(BLOB):
            data += s.recv(65536)
        assert time.monotonic() - start >= 0.9


def test_hostile_manifests_bearer_and_tls(hostile: HostileRegistry) -> None:
    """Manifests by tag and digest (HEAD too), a >4 MiB manifest, a Bearer challenge, TLS."""
    image = make_image([layer({"a": b"a"})])
    hostile.add_image("kit/m", "v1", image)
    for ref in ("v1", image.digest):
        status, headers, body = raw(hostile.port, f"/v2/kit/m/manifests/{ref}")
        assert (status, body, headers["content-type"]) == (200, image.manifest, image.media_type)
    status, headers, body = raw(hostile.port, "/v2/kit/m/manifests/v1", "HEAD")
    assert status == 200 and body == b"" and headers["docker-content-digest"] == image.digest
    assert json.loads(raw(hostile.port, "/v2/kit/m/tags/list")[2])["tags"] == ["v1"]
    big = oversized_manifest(image)
    hostile.add_manifest("kit/m", "big", big, image.media_type)
    status, headers, body = raw(hostile.port, "/v2/kit/m/manifests/big")
    assert int(headers["content-length"]) == len(body) > 4 * 1024 * 1024 and json.loads(body)
    hostile.behave("v1", Behaviour(require_bearer=True))
    status, headers, _ = raw(hostile.port, "/v2/kit/m/manifests/v1")
    scheme, params = parse_challenge(headers["www-authenticate"])
    assert status == 401 and scheme == "bearer" and params["realm"] == hostile.realm
    assert params["scope"] == "repository:kit/m:pull"
    token = json.loads(raw(hostile.port, "/token?scope=x")[2])["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert raw(hostile.port, "/v2/kit/m/manifests/v1", headers=auth)[0] == 200
    assert hostile.requests_for("/manifests/v1")[-1].headers["authorization"] == f"Bearer {token}"
    with HostileRegistry(tls=True, require_bearer=True) as tls:
        ctx = ssl.create_default_context(cadata=tls.cert_pem.decode())
        s = socket.create_connection(("127.0.0.1", tls.port), timeout=5)
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            t.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert t.recv(100).startswith(b"HTTP/1.1 401 ")
        assert tls.url.startswith("https://")
    assert raw(hostile.port, "/v2/")[0] == 200


def test_hostile_stop_closes_stalled_connections() -> None:
    """stop() ends a connection stalled for a long time and joins every thread quickly."""
    before = threading.active_count()
    server = HostileRegistry().start()
    digest = server.add_blob(BLOB)
    server.behave(digest, Behaviour(stall=60))
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        s.sendall(f"GET /v2/x/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 3 and threading.active_count() == before
        assert s.recv(65536) == b""
    finally:
        s.close()


# -- builders ------------------------------------------------------------------------------
def test_images_digests_and_compression() -> None:
    """Digests are sha256 of the bytes; gzip and zstd blobs decompress to the layer."""
    tar = busybox_rootfs_tar()
    files = layer({"etc/a/b": b"b"})
    assert make_image([tar, files]).manifest == make_image([tar, files]).manifest
    for media, compression in (("docker", "gzip"), ("oci", "zstd"), ("oci", "none")):
        image = make_image([tar, files], compression=compression, media=media)
        doc = json.loads(image.manifest)
        assert image.digest == sha(image.manifest)
        assert doc["mediaType"] == (DOCKER_MANIFEST if media == "docker" else OCI_MANIFEST)
        assert doc["config"]["digest"] == sha(image.config) == image.config_digest
        assert json.loads(image.config)["rootfs"]["diff_ids"] == [sha(tar), sha(files)]
        for desc, plain in zip(doc["layers"], (tar, files), strict=True):
            blob = image.blobs[desc["digest"]]
            assert sha(blob) == desc["digest"] and len(blob) == desc["size"]
            if compression == "gzip":
                blob = gzip.decompress(blob)
            elif compression == "zstd":
                blob = zstandard.ZstdDecompressor().decompress(blob)
            assert blob == plain
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        members = {m.name: m for m in t.getmembers()}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"
    assert members["bin/busybox"].mode == 0o755 and {m.uid for m in members.values()} == {0}
    with tarfile.open(fileobj=io.BytesIO(files)) as t:
        assert [m.name for m in t.getmembers()] == ["etc", "etc/a", "etc/a/b"]
    extra = make_image([files], config_extra={"config": {"Cmd": ["/bin/sh"]}})
    assert json.loads(extra.config)["config"]["Cmd"] == ["/bin/sh"]


def test_make_index_lists_platforms() -> None:
    """An index names each image by digest, size and platform, in OCI or Docker media."""
    one = make_image([layer({"a": b"1"})])
    two = make_image([layer({"a": b"2"})], platform="linux/arm64/v8")
    for media, mtype in (("oci", OCI_INDEX), ("docker", DOCKER_LIST)):
        index = make_index({"linux/amd64": one, "linux/arm64/v8": two}, media=media)
        doc = json.loads(index.manifest)
        assert index.digest == sha(index.manifest) and doc["mediaType"] == mtype
        assert [(m["digest"], m["size"]) for m in doc["manifests"]] == [
            (sha(one.manifest), len(one.manifest)), (sha(two.manifest), len(two.manifest))
        ]  # fmt: skip
        platform = {"architecture": "arm64", "os": "linux", "variant": "v8"}
        assert doc["manifests"][1]["platform"] == platform
        assert set(index.manifests()) == {one.digest, two.digest, index.digest}


def test_gzip_bomb_is_small_quick_and_valid() -> None:
    """The 10 GiB bomb builds in under 2 s to a few MB; a small one passes gzip's CRC check."""
    start = time.monotonic()
    bomb = gzip_bomb()
    assert time.monotonic() - start < 2 and len(bomb.blob) < 16 * 1024 * 1024
    head = zlib.decompressobj(31).decompress(bomb.blob[:4096], 512)
    assert tarfile.TarInfo.frombuf(head, "utf-8", "strict").size == 10 * 1024**3
    assert int.from_bytes(bomb.blob[-4:], "little") == (512 + 10 * 1024**3 + 1024) % 2**32
    small = gzip_bomb(size=4 * 1024 * 1024)
    data = gzip.decompress(small.blob)
    assert len(data) == 512 + 4 * 1024 * 1024 + 1024 and data[512:] == bytes(len(data) - 512)


@needs_skopeo
def test_write_layout_roundtrip_with_skopeo(registry: Registry) -> None:
    """An Index written as an OCI layout and pushed with skopeo keeps its digest."""
    index = make_index({"linux/amd64": make_image([layer({"i": b"i"})], media="oci")})
    push_with_skopeo(index, registry, "kit/layout", "v1")
    resp = registry.client().manifest("kit/layout", "v1")
    assert resp.headers["docker-content-digest"] == index.digest
