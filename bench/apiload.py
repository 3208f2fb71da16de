#!/usr/bin/env python3
"""Request rate and latency of the Docker Engine API on a unix socket (stdlib only).

Used by bench/api.sh against dockyard and dockerd alike, so that both face the same client.

    apiload.py SOCKET bench --path PATH [--requests 20000] [--warmup 300] [--pid PID]
        GET PATH again and again on ONE keep-alive HTTP/1.1 connection, one request after
        another (no pipelining): WARMUP untimed requests, then REQUESTS timed ones. With --pid,
        also the CPU time (utime + stime of /proc/PID/stat) that process spent in the window.
    apiload.py SOCKET populate --label K=V [--count 100] [--parallel 10]
        create COUNT busybox containers running ``true`` (--network none) with the label, start
        them and wait until every one has exited with status 0
    apiload.py SOCKET clean --label K=V
        force-remove every container with the label (only those)
    apiload.py SOCKET version
        the daemon's Version and ApiVersion (GET /version)

Each command prints one JSON object on stdout. In ``bench``: ``rps`` is REQUESTS over the wall
time of the timed requests, ``p50_ms``/``p99_ms`` are latency percentiles of single requests
(request sent to body read), ``cpu_us`` is the daemon's CPU time per request in microseconds
and ``client_cpu_us`` this client's own, ``items`` the length of the last answer when it is a
JSON array (the number of containers listed).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from runloop import Api, UnixConnection, cmd_clean, label_arg

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of process *pid* (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


class KeepAlive:
    """One HTTP/1.1 connection kept open for every request; a reconnect is an error."""

    def __init__(self, socket_path: str) -> None:
        self.conn = UnixConnection(socket_path, timeout=60)
        self.conn.connect()
        self.sock = self.conn.sock

    def get(self, path: str) -> bytes:
        """GET *path*; the body. Anything but 200, or a connection the daemon closes, raises."""
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        if response.will_close or self.conn.sock is not self.sock:
            raise RuntimeError(f"GET {path}: the daemon did not keep the connection open")
        return body

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()


def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then time REQUESTS sequential GETs of PATH on one connection."""
    client = KeepAlive(args.socket)
    try:
        for _ in range(args.warmup):
            client.get(args.path)
        latencies = [0] * args.requests
        clock = time.perf_counter_ns
        get, path = client.get, args.path
        gc.disable()  # no collection pause inside the window (the loop makes little garbage)
        try:
            daemon_before = cpu_seconds(args.pid) if args.pid else 0.0
            client_before = time.process_time()
            began = clock()
            for i in range(args.requests):
                t0 = clock()
                body = get(path)
                latencies[i] = clock() - t0
            wall = (clock() - began) / 1e9
            client_cpu = time.process_time() - client_before
            daemon_cpu = cpu_seconds(args.pid) - daemon_before if args.pid else None
        finally:
            gc.enable()
    finally:
        client.close()
    decoded = json.loads(body) if body[:1] == b"[" else None
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "path": args.path,
        "requests": args.requests,
        "warmup": args.warmup,
        "wall_s": round(wall, 4),
        "rps": round(args.requests / wall, 1),
        "p50_ms": round(statistics.median(latencies) / 1e6, 4),
        "p99_ms": round(cuts[98] / 1e6, 4),
        "max_ms": round(max(latencies) / 1e6, 4),
        "cpu_us": None if daemon_cpu is None else round(daemon_cpu / args.requests * 1e6, 2),
        "client_cpu_us": round(client_cpu / args.requests * 1e6, 2),
        "body_bytes": len(body),
        "items": len(decoded) if isinstance(decoded, list) else None,
    }


def cmd_populate(args: argparse.Namespace) -> dict[str, Any]:
    """COUNT labelled containers of ``true``, started and run to exit, PARALLEL at a time."""
    api = Api(args.socket)
    body = {
        "Image": "busybox:latest",
        "Cmd": ["true"],
        "Labels": {args.label[0]: args.label[1]},
        "HostConfig": {"NetworkMode": "none"},
    }

    def run_one(_: int) -> int:
        id = str(api.call("POST", "/containers/create", body)["Id"])
        api.call("POST", f"/containers/{id}/start")
        return int(api.call("POST", f"/containers/{id}/wait")["StatusCode"])

    began = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        statuses = list(pool.map(run_one, range(args.count)))
    wall = time.perf_counter() - began
    if any(statuses):
        raise RuntimeError(f"`true` exited non-zero in {sum(map(bool, statuses))} containers")
    states = [c["State"] for c in api.labelled(args.label)]
    if len(states) != args.count or set(states) != {"exited"}:
        raise RuntimeError(f"wanted {args.count} exited containers, the daemon lists {states}")
    return {"created": args.count, "wall": round(wall, 3)}


def cmd_version(args: argparse.Namespace) -> dict[str, Any]:
    """Version and ApiVersion of the daemon."""
    answer = Api(args.socket).call("GET", "/version")
    return {"Version": answer.get("Version"), "ApiVersion": answer.get("ApiVersion")}


def main() -> None:
    """Parse the command line and print the command's result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("socket")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bench")
    p.add_argument("--path", required=True)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--pid", type=int)
    p = sub.add_parser("populate")
    p.add_argument("--label", type=label_arg, required=True)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--parallel", type=int, default=10)
    p = sub.add_parser("clean")
    p.add_argument("--label", type=label_arg, required=True)
    sub.add_parser("version")
    args = parser.parse_args()
    try:
        if args.command == "clean":
            result = cmd_clean(Api(args.socket), args)
        else:
            commands = {"bench": cmd_bench, "populate": cmd_populate, "version": cmd_version}
            result = commands[args.command](args)
    except (RuntimeError, OSError, KeyError, ValueError) as exc:
        sys.exit(f"apiload.py {args.command}: {exc}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
