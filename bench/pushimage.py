#!/usr/bin/env python3
"""Push layer tars as one image to a registry over plain HTTP, without any engine.

    python3 bench/pushimage.py HOST:PORT NAME:TAG LAYER.tar [LAYER.tar ...] [--level N]

Each layer is gzipped (level 6 by default, as `docker push` does), uploaded monolithically,
then a config naming their diff_ids and a Docker schema 2 manifest. Prints the manifest digest.
The pull benchmark seeds its registry with this, so every engine pulls the same bytes.
Python standard library only.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import json
import platform
import sys
from pathlib import Path
from urllib.parse import urlsplit

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:  # fmt: skip
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    response.read()
    if response.status >= 300:
        sys.exit(f"{method} {path}: {response.status} {response.reason}")
    return response


def upload(conn: http.client.HTTPConnection, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = request(conn, "POST", f"/v2/{name}/blobs/uploads/")
    location = urlsplit(started.getheader("Location", ""))
    query = f"{location.query}&" if location.query else ""
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
    request(conn, "PUT", f"{location.path}?{query}digest={digest}", data, headers)
    return digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("registry")
    parser.add_argument("reference")
    parser.add_argument("layers", nargs="+", type=Path)
    parser.add_argument("--level", type=int, default=6)
    args = parser.parse_args()
    name, _, tag = args.reference.partition(":")
    host, _, port = args.registry.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=300)
    layers, diff_ids = [], []
    for path in args.layers:
        raw = path.read_bytes()
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        blob = gzip.compress(raw, args.level, mtime=0)
        layers.append({"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                       "size": len(blob), "digest": upload(conn, name, blob)})  # fmt: skip
    config = json.dumps({
        "architecture": ARCH, "os": "linux", "created": "2026-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"layer {p.name}"}
                    for p in args.layers],
    }).encode()  # fmt: skip
    config_digest = upload(conn, name, config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": config_digest},
        "layers": layers,
    }).encode()  # fmt: skip
    media = {"Content-Type": "application/vnd.docker.distribution.manifest.v2+json"}
    request(conn, "PUT", f"/v2/{name}/manifests/{tag or 'latest'}", manifest, media)
    print("sha256:" + hashlib.sha256(manifest).hexdigest())


if __name__ == "__main__":
    main()
