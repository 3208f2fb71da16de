#!/usr/bin/env python3
"""Container benchmarks through the Docker Engine API on a unix socket (stdlib only).

Used by bench/run.sh against dockyard and dockerd alike; every container it makes carries the
label given with --label, and only containers with that label are ever removed.

    runloop.py SOCKET loop  --label K=V [--runs 30] [--warmup 2] [--network none]...
        time create + start + wait + remove of ``true``, one run after another, on each network
        given (HostConfig.NetworkMode: ``none``, or ``default`` for the daemon's default bridge;
        repeatable, default none); with several, each round runs one container on each, the
        order turning round by round, so that they share the machine's load alike
    runloop.py SOCKET many  --label K=V [--count 50] [--parallel 10]
        create + start COUNT containers running ``sleep 300``, at most PARALLEL at a time
    runloop.py SOCKET pss   --label K=V [--data-root DIR]
        proportional memory (Pss of /proc/PID/smaps_rollup) of each running container's monitor:
        with --data-root the ``State.Monitor.monitor_pid`` in ``containers/<id>/config.v2.json``
        (dockyard), else the parent of the container's process (dockerd's containerd-shim)
    runloop.py SOCKET clean --label K=V
        force-remove every container with the label

Each command prints one JSON object on stdout; times are seconds, memory is KiB.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

API = "/v1.41"
IMAGE = "busybox:latest"


class UnixConnection(http.client.HTTPConnection):
    """An HTTP connection over a unix socket."""

    def __init__(self, path: str, timeout: float = 120) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        """Connect to the socket instead of a TCP port."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class Api:
    """The few Engine API calls the benchmarks make; an error status raises RuntimeError."""

    def __init__(self, path: str) -> None:
        self.path = path

    def call(self, method: str, url: str, body: Any = None) -> Any:
        """One request on a new connection; the decoded JSON answer (None when empty)."""
        conn = UnixConnection(self.path)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, API + url, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        if response.status >= 300 and response.status != 304:
            raise RuntimeError(f"{method} {url}: {response.status} {raw[:300]!r}")
        return json.loads(raw) if raw.strip() else None

    def create(self, cmd: list[str], label: tuple[str, str], network: str = "none") -> str:
        """Create a container of busybox on *network* (a NetworkMode); its id."""
        body = {
            "Image": IMAGE,
            "Cmd": cmd,
            "Labels": {label[0]: label[1]},
            "HostConfig": {"NetworkMode": network},
        }
        return str(self.call("POST", "/containers/create", body)["Id"])

    def labelled(self, label: tuple[str, str]) -> list[dict[str, Any]]:
        """Every container (any state) with the label."""
        filters = json.dumps({"label": [f"{label[0]}={label[1]}"]})
        query = urllib.parse.urlencode({"all": "1", "filters": filters})
        return list(self.call("GET", f"/containers/json?{query}"))


def one_run(api: Api, label: tuple[str, str], network: str = "none") -> float:
    """create + start + wait + remove of ``true`` on *network*; the wall time."""
    began = time.perf_counter()
    id = api.create(["true"], label, network)
    api.call("POST", f"/containers/{id}/start")
    status = api.call("POST", f"/containers/{id}/wait")
    api.call("DELETE", f"/containers/{id}")
    took = time.perf_counter() - began
    if status.get("StatusCode") != 0:
        raise RuntimeError(f"true exited with {status}")
    return took


def cmd_loop(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Time the run loop on each network, by network; warm-up rounds are made but not counted."""
    networks = list(dict.fromkeys(args.network or ["none"]))
    times: dict[str, list[float]] = {net: [] for net in networks}
    for i in range(args.warmup + args.runs):
        turn = i % len(networks)
        for net in networks[turn:] + networks[:turn]:
            took = one_run(api, args.label, net)
            if i >= args.warmup:
                times[net].append(took)
    return {net: {"median": statistics.median(t), "min": min(t), "max": max(t),
                  "times": [round(x, 4) for x in t]} for net, t in times.items()}  # fmt: skip


def cmd_many(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Start COUNT sleeping containers, PARALLEL requests in flight; the wall time."""

    def start_one(_: int) -> str:
        id = api.create(["sleep", "300"], args.label)
        api.call("POST", f"/containers/{id}/start")
        return id

    began = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        ids = list(pool.map(start_one, range(args.count)))
    wall = time.perf_counter() - began
    running = sum(1 for id in ids if api.call("GET", f"/containers/{id}/json")["State"]["Running"])
    if running != args.count:
        raise RuntimeError(f"only {running} of {args.count} containers are running")
    return {"wall": wall, "count": args.count, "parallel": args.parallel}


def pss_kib(pid: int) -> int:
    """The Pss line of /proc/PID/smaps_rollup, in KiB."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def parent_of(pid: int) -> int:
    """The parent pid of *pid* (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("PPid:"):
            return int(line.split()[1])
    raise RuntimeError(f"no PPid for {pid}")


def monitor_pid(api: Api, id: str, data_root: str | None) -> int:
    """The pid of the process that supervises the container."""
    if data_root:
        config = json.loads((Path(data_root) / "containers" / id / "config.v2.json").read_text())
        return int(config["State"]["Monitor"]["monitor_pid"])
    return parent_of(int(api.call("GET", f"/containers/{id}/json")["State"]["Pid"]))


def cmd_pss(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Pss of every running labelled container's monitor: median, max, and the program."""
    pids = [monitor_pid(api, c["Id"], args.data_root)
            for c in api.labelled(args.label) if c["State"] == "running"]  # fmt: skip
    if not pids:
        raise RuntimeError("no running containers with the label")
    sizes = [pss_kib(pid) for pid in pids]
    comm = sorted({Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids})
    return {"median": statistics.median(sizes), "max": max(sizes), "count": len(sizes),
            "sum": sum(sizes), "program": ",".join(comm)}  # fmt: skip


def cmd_clean(api: Api, args: argparse.Namespace) -> dict[str, Any]:
    """Force-remove the labelled containers, 10 at a time."""
    ids = [c["Id"] for c in api.labelled(args.label)]
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda id: api.call("DELETE", f"/containers/{id}?force=1&v=1"), ids))
    left = api.labelled(args.label)
    if left:
        raise RuntimeError(f"{len(left)} containers could not be removed")
    return {"removed": len(ids)}


def label_arg(text: str) -> tuple[str, str]:
    """K=V."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--label wants KEY=VALUE, not {text!r}")
    return key, value


def main() -> None:
    """Parse the command line and print the command's result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("socket")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("loop", "many", "pss", "clean"):
        p = sub.add_parser(name)
        p.add_argument("--label", type=label_arg, required=True)
        if name == "loop":
            p.add_argument("--runs", type=int, default=30)
            p.add_argument("--warmup", type=int, default=2)
            p.add_argument("--network", action="append", help="NetworkMode: none, default, ...")
        if name == "many":
            p.add_argument("--count", type=int, default=50)
            p.add_argument("--parallel", type=int, default=10)
        if name == "pss":
            p.add_argument("--data-root")
    args = parser.parse_args()
    api = Api(args.socket)
    commands = {"loop": cmd_loop, "many": cmd_many, "pss": cmd_pss, "clean": cmd_clean}
    try:
        result = commands[args.command](api, args)
    except (RuntimeError, OSError, KeyError) as exc:
        sys.exit(f"runloop.py {args.command}: {exc}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
