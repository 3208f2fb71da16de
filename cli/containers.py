"""Container commands, mirroring docker's: run, create, start, stop, restart, kill, rm, pause,
unpause, wait, ps, logs, attach, exec, top, stats, diff, export, commit, cp, rename, update.

Each is a thin client of the Docker API routes the daemon serves.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import click
import orjson

from cli import render, runflags
from cli.attach import open_hijack, pump, raw_terminal, terminal_size
from cli.client import Client
from cli.client import filters as encode_filters
from engine.errors import EngineError, InvalidArgument, NotFound

pass_client = click.make_pass_decorator(Client)


def _c(ref: str, suffix: str = "") -> str:
    return f"/containers/{quote(ref, safe='')}{suffix}"


def _post(client: Client, path: str, body: object = None, **query: object) -> bytes:
    suffix = f"?{urlencode({k: v for k, v in query.items() if v is not None})}" if query else ""
    return client.request("POST", path + suffix, body).read()


def _resize(client: Client, path: str) -> None:
    rows, cols = terminal_size()
    if rows and cols:
        with contextlib.suppress(EngineError):
            _post(client, path, h=rows, w=cols)


class _Waiter(threading.Thread):
    """``POST /containers/{id}/wait`` on its own connection, started before the container."""

    def __init__(self, client: Client, id: str, condition: str) -> None:
        super().__init__(daemon=True)
        self.client, self.id, self.condition = client, id, condition
        self.result: dict[str, Any] = {}
        self.error: EngineError | None = None
        self.ready = threading.Event()

    def run(self) -> None:
        try:
            response = self.client.request("POST", _c(self.id, f"/wait?condition={self.condition}"))
            self.ready.set()
            self.result = orjson.loads(response.read())
        except EngineError as exc:
            self.error = exc
        finally:
            self.ready.set()


def _run(client: Client, options: dict[str, Any], image: str, command: tuple[str, ...],
         start: bool) -> None:  # fmt: skip
    if options.get("tty") and not options.get("console_size"):
        options = {**options, "console_size": terminal_size()}
    body = runflags.to_create_body(options, image, command)
    query = runflags.create_query(options)
    try:
        created = orjson.loads(_post(client, "/containers/create", body, **query))
    except NotFound as exc:
        click.echo(f"dockyard: Unable to find image '{image}' locally: {exc}", err=True)
        sys.exit(125)
    except EngineError as exc:
        click.echo(f"dockyard: Error response from daemon: {exc}", err=True)
        sys.exit(125)
    id = created["Id"]
    if not start:
        click.echo(id)
        return
    detach = bool(options.get("detach"))
    tty = bool(body.get("Tty"))
    interactive = bool(body.get("OpenStdin"))
    if detach:
        try:
            _start(client, id)
        except EngineError as exc:  # docker run -d: the daemon's error and 125, as docker
            click.echo(f"dockyard: Error response from daemon: {exc}", err=True)
            sys.exit(125)
        click.echo(id)
        return
    query = {"stream": 1, "stdout": 1, "stderr": 1}
    if interactive:
        query["stdin"] = 1
    sock, early = open_hijack(client, _c(id, "/attach?" + urlencode(query)))
    waiter = _Waiter(
        client, id, "removed" if body.get("HostConfig", {}).get("AutoRemove") else "next-exit"
    )
    waiter.start()
    waiter.ready.wait(5)
    try:
        _start(client, id)
    except EngineError as exc:
        sock.close()
        click.echo(f"dockyard: Error response from daemon: {exc}", err=True)
        sys.exit(_start_failure_status(client, id, waiter))
    if tty:
        _resize(client, _c(id, "/resize"))
    with raw_terminal(tty and interactive):
        pump(sock, early, tty=tty, send_stdin=interactive,
             on_resize=lambda: _resize(client, _c(id, "/resize")))  # fmt: skip
    waiter.join()
    if waiter.error is not None:
        raise waiter.error
    error = waiter.result.get("Error")
    if error:
        click.echo(f"dockyard: {error.get('Message')}", err=True)
        sys.exit(125)
    sys.exit(int(waiter.result.get("StatusCode", 0)))


def _start_failure_status(client: Client, id: str, waiter: _Waiter) -> int:
    """docker run's status when the start failed: the container's own exit code when the
    command could not be run (127 not found, 126 not executable), else 125."""
    if waiter.condition == "removed":  # --rm: the daemon removes it, and the wait says the code
        waiter.join(10)
        code = int(waiter.result.get("StatusCode", 125))
    else:
        try:
            info = client.get(_c(id, "/json"))
        except EngineError:
            return 125
        assert isinstance(info, dict)
        code = int(info["State"]["ExitCode"])
    return code if code in (126, 127) else 125


def _start(client: Client, id: str) -> None:
    client.request("POST", _c(id, "/start")).read()


@click.command(context_settings=runflags.RUN_CONTEXT)
@runflags.run_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_client
def run(client: Client, image: str, command: tuple[str, ...], **options: Any) -> None:
    """Create and start a container, attached unless -d; exit with its status.

    Example: dockyard run --rm busybox echo hello from dockyard
    """
    _run(client, options, image, command, start=True)


@click.command(context_settings=runflags.RUN_CONTEXT)
@runflags.create_options
@click.argument("image")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@pass_client
def create(client: Client, image: str, command: tuple[str, ...], **options: Any) -> None:
    """Create a container; print its id.

    Example: dockyard create --name web busybox httpd -f
    """
    _run(client, options, image, command, start=False)


@click.command()
@click.option("-a", "--attach", "attach_", is_flag=True, help="Attach stdout/stderr.")
@click.option("-i", "--interactive", is_flag=True, help="Attach stdin.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def start(client: Client, containers: tuple[str, ...], attach_: bool, interactive: bool) -> None:
    """Start one or more containers.

    Example: dockyard start -a web
    """
    if attach_ or interactive:
        ref = containers[0]
        info = client.get(_c(ref, "/json"))
        assert isinstance(info, dict)
        tty = bool(info["Config"].get("Tty"))
        query = {"stream": 1, "stdout": 1, "stderr": 1, **({"stdin": 1} if interactive else {})}
        sock, early = open_hijack(client, _c(ref, "/attach?" + urlencode(query)))
        _start(client, ref)
        with raw_terminal(tty and interactive):
            pump(sock, early, tty=tty, send_stdin=interactive)
        result = orjson.loads(_post(client, _c(ref, "/wait")))
        sys.exit(int(result.get("StatusCode", 0)))
    for ref in containers:
        _start(client, ref)
        click.echo(ref)


def _each(containers: tuple[str, ...], action: Any) -> None:
    failed = None
    for ref in containers:
        try:
            action(ref)
            click.echo(ref)
        except EngineError as exc:
            click.echo(f"Error response from daemon: {exc}", err=True)
            failed = exc
    if failed is not None:
        raise failed


@click.command()
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds before SIGKILL.")
@click.option("-s", "--signal", "signal_", default=None, help="Signal to send first.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def stop(
    client: Client, containers: tuple[str, ...], timeout: int | None, signal_: str | None
) -> None:
    """Stop running containers (signal, then SIGKILL after the timeout).

    Example: dockyard stop -t 5 web
    """
    _each(containers, lambda ref: _post(client, _c(ref, "/stop"), t=timeout, signal=signal_))


@click.command()
@click.option("-t", "--time", "timeout", type=int, default=None, help="Seconds before SIGKILL.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def restart(client: Client, containers: tuple[str, ...], timeout: int | None) -> None:
    """Restart containers.

    Example: dockyard restart web
    """
    _each(containers, lambda ref: _post(client, _c(ref, "/restart"), t=timeout))


@click.command()
@click.option("-s", "--signal", "signal_", default="KILL", help="Signal to send.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def kill(client: Client, containers: tuple[str, ...], signal_: str) -> None:
    """Send a signal (KILL by default) to running containers.

    Example: dockyard kill -s HUP web
    """
    _each(containers, lambda ref: _post(client, _c(ref, "/kill"), signal=signal_))


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill a running container first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove its anonymous volumes.")
@click.option("-l", "--link", is_flag=True, help="Remove the link of that path (/web/db).")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def rm(client: Client, containers: tuple[str, ...], force: bool, volumes: bool, link: bool) -> None:
    """Remove containers (with -l: links, by path).

    Example: dockyard rm -f web
    """
    if link:  # docker CLI 28 trims a link path's slashes: /web/db goes as DELETE /containers/web/db
        _each(containers, lambda ref: client.delete(
            f"/containers/{quote(ref.strip('/'), safe='/')}", force=int(force), v=int(volumes),
            link=1))  # fmt: skip
        return
    _each(containers, lambda ref: client.delete(_c(ref), force=int(force), v=int(volumes)))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_client
def pause(client: Client, containers: tuple[str, ...]) -> None:
    """Freeze all processes of containers.

    Example: dockyard pause web
    """
    _each(containers, lambda ref: _post(client, _c(ref, "/pause")))


@click.command()
@click.argument("containers", nargs=-1, required=True)
@pass_client
def unpause(client: Client, containers: tuple[str, ...]) -> None:
    """Thaw paused containers.

    Example: dockyard unpause web
    """
    _each(containers, lambda ref: _post(client, _c(ref, "/unpause")))


@click.command()
@click.option("--condition", default="not-running", help="not-running, next-exit or removed.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def wait(client: Client, containers: tuple[str, ...], condition: str) -> None:
    """Wait for containers to stop; print their exit codes.

    Example: dockyard wait web
    """
    for ref in containers:
        result = orjson.loads(_post(client, _c(ref, "/wait"), condition=condition))
        click.echo(result["StatusCode"])


def ports_column(ports: list[dict[str, Any]]) -> str:
    """The PORTS column of ``ps``: ``0.0.0.0:8080->80/tcp``, ``53/udp`` when not published."""
    shown = []
    for p in sorted(ports, key=lambda p: (p.get("PrivatePort", 0), p.get("Type", ""),
                                          p.get("PublicPort", 0))):  # fmt: skip
        inner = f"{p.get('PrivatePort')}/{p.get('Type', 'tcp')}"
        if p.get("PublicPort"):
            shown.append(f"{p.get('IP') or '0.0.0.0'}:{p['PublicPort']}->{inner}")
        elif inner not in shown:
            shown.append(inner)
    return ", ".join(shown)


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Show stopped containers too.")
@click.option("-q", "--quiet", is_flag=True, help="Only ids.")
@click.option(
    "-f",
    "--filter",
    "filters",
    multiple=True,
    help="key=value (id, name, label, status, ancestor, exited, before, since, volume).",
)
@click.option("-n", "--last", type=int, default=-1, help="The N newest containers.")
@click.option("-l", "--latest", is_flag=True, help="The newest container.")
@click.option("-s", "--size", is_flag=True, help="Show sizes.")
@click.option("--no-trunc", is_flag=True, help="Do not truncate output.")
@pass_client
def ps(client: Client, all_: bool, quiet: bool, filters: tuple[str, ...], last: int, latest: bool,
       size: bool, no_trunc: bool) -> None:  # fmt: skip
    """List containers (running ones unless -a).

    Example: dockyard ps -a --filter status=exited
    """
    query: dict[str, object] = {"all": int(all_), "size": int(size)}
    if latest:
        last = 1
    if last > 0:
        query["limit"] = last
    if filters:
        query["filters"] = encode_filters(filters)
    rows = client.get("/containers/json", **query)
    assert isinstance(rows, list)
    if quiet:
        for row in rows:
            click.echo(row["Id"] if no_trunc else row["Id"][:12])
        return
    shown = []
    for row in rows:
        command = row["Command"] if no_trunc else _trunc(row["Command"], 20)
        shown.append({
            "id": row["Id"] if no_trunc else row["Id"][:12], "image": row["Image"],
            "command": f'"{command}"', "created": _ago(row["Created"]),
            "status": row["Status"], "ports": ports_column(row.get("Ports") or []),
            "names": ",".join(n.lstrip("/") for n in row["Names"]),
            "size": f"{row.get('SizeRw', 0)}B (virtual {row.get('SizeRootFs', 0)}B)",
        })  # fmt: skip
    columns = [("CONTAINER ID", "id"), ("IMAGE", "image"), ("COMMAND", "command"),
               ("CREATED", "created"), ("STATUS", "status"), ("PORTS", "ports"),
               ("NAMES", "names")]  # fmt: skip
    if size:
        columns.append(("SIZE", "size"))
    render.table(shown, columns)


def _trunc(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _ago(created: int) -> str:
    seconds = max(0, int(time.time()) - int(created))
    for unit, size in (("weeks", 604800), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} seconds ago"


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep following the output.")
@click.option("-t", "--timestamps", is_flag=True, help="Show timestamps.")
@click.option("-n", "--tail", default="all", help="Lines from the end (all by default).")
@click.option("--since", default="", help="Since a time (RFC 3339, unix time or 10m).")
@click.option("--until", default="", help="Until a time.")
@click.argument("container")
@pass_client
def logs(client: Client, container: str, follow: bool, timestamps: bool, tail: str, since: str,
         until: str) -> None:  # fmt: skip
    """Show a container's output.

    Example: dockyard logs -f --tail 10 web
    """
    info = client.get(_c(container, "/json"))
    assert isinstance(info, dict)
    query = {"stdout": 1, "stderr": 1, "follow": int(follow), "timestamps": int(timestamps),
             "tail": tail, "since": since, "until": until}  # fmt: skip
    response = client.request("GET", _c(container, "/logs?" + urlencode(query)))
    from cli.attach import demux

    buffer = bytearray()
    tty = bool(info["Config"].get("Tty"))
    while chunk := response.read1(65536):
        buffer += chunk
        if tty:
            sys.stdout.buffer.write(bytes(buffer))
            buffer.clear()
            sys.stdout.buffer.flush()
            continue
        for stream, data in demux(buffer):
            target = sys.stderr.buffer if stream == 2 else sys.stdout.buffer
            target.write(data)
            target.flush()


@click.command()
@click.option("--no-stdin", is_flag=True, help="Do not attach stdin.")
@click.option("--detach-keys", default="", help="Keys that detach (ctrl-p,ctrl-q).")
@click.argument("container")
@pass_client
def attach(client: Client, container: str, no_stdin: bool, detach_keys: str) -> None:
    """Attach the terminal to a running container's stdio.

    Example: dockyard attach web
    """
    info = client.get(_c(container, "/json"))
    assert isinstance(info, dict)
    if not info["State"]["Running"]:
        raise click.ClickException("You cannot attach to a stopped container, start it first")
    tty = bool(info["Config"].get("Tty"))
    stdin = not no_stdin and bool(info["Config"].get("OpenStdin"))
    query = {"stream": 1, "stdout": 1, "stderr": 1, **({"stdin": 1} if stdin else {})}
    if detach_keys:
        query["detachKeys"] = detach_keys
    sock, early = open_hijack(client, _c(container, "/attach?" + urlencode(query)))
    with raw_terminal(tty and stdin):
        pump(sock, early, tty=tty, send_stdin=stdin)


@click.command(name="exec", context_settings={"allow_interspersed_args": False})
@click.option("-d", "--detach", is_flag=True, help="Run in the background.")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a terminal.")
@click.option("-u", "--user", default="", help="user[:group] or uid[:gid].")
@click.option("-w", "--workdir", default="", help="Working directory.")
@click.option("-e", "--env", multiple=True, help="KEY=VALUE.")
@click.option("--privileged", is_flag=True, help="Every capability the daemon holds.")
@click.argument("container")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_client
def exec_(client: Client, container: str, command: tuple[str, ...], detach: bool,
          interactive: bool, tty: bool, user: str, workdir: str, env: tuple[str, ...],
          privileged: bool) -> None:  # fmt: skip
    """Run a command in a running container; exit with its status.

    Example: dockyard exec -it web sh
    """
    size = list(terminal_size()) if tty else None
    body = {"User": user, "Privileged": privileged, "Tty": tty, "AttachStdin": interactive,
            "AttachStdout": True, "AttachStderr": True, "Detach": detach, "Env": list(env) or None,
            "WorkingDir": workdir, "Cmd": list(command), "ConsoleSize": size}  # fmt: skip
    created = orjson.loads(_post(client, _c(container, "/exec"), body))
    id = created["Id"]
    if detach:
        _post(client, f"/exec/{id}/start", {"Detach": True, "Tty": tty})
        return
    sock, early = open_hijack(
        client, f"/exec/{id}/start", {"Detach": False, "Tty": tty, "ConsoleSize": size}
    )
    with raw_terminal(tty and interactive):
        pump(sock, early, tty=tty, send_stdin=interactive,
             on_resize=lambda: _resize(client, f"/exec/{id}/resize"))  # fmt: skip
    for _ in range(100):
        info = client.get(f"/exec/{id}/json")
        assert isinstance(info, dict)
        if not info["Running"] and info["ExitCode"] is not None:
            sys.exit(int(info["ExitCode"]))
        time.sleep(0.02)
    sys.exit(int(info.get("ExitCode") or 0))


@click.command()
@click.argument("container")
@click.argument("ps_args", nargs=-1)
@pass_client
def top(client: Client, container: str, ps_args: tuple[str, ...]) -> None:
    """Show the processes of a running container.

    Example: dockyard top web
    """
    result = client.get(
        _c(container, "/top"), **({"ps_args": " ".join(ps_args)} if ps_args else {})
    )
    assert isinstance(result, dict)
    titles = result["Titles"]
    render.table([dict(zip(titles, row, strict=False)) for row in result["Processes"]],
                 [(t, t) for t in titles])  # fmt: skip


@click.command()
@click.option("--no-stream", is_flag=True, help="One sample, then exit.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def stats(client: Client, containers: tuple[str, ...], no_stream: bool) -> None:
    """Show resource usage from the containers' cgroups.

    Example: dockyard stats --no-stream web
    """
    while True:
        rows = []
        for ref in containers:
            s = client.get(_c(ref, "/stats"), stream=0)
            assert isinstance(s, dict)
            mem = s.get("memory_stats") or {}
            pids = s.get("pids_stats") or {}
            rows.append({"id": s["id"][:12], "name": s["name"].lstrip("/"),
                         "mem": f"{_size(mem.get('usage', 0))} / {_size(mem.get('limit', 0))}",
                         "pids": pids.get("current", 0)})  # fmt: skip
        render.table(rows, [("CONTAINER ID", "id"), ("NAME", "name"), ("MEM USAGE / LIMIT", "mem"),
                            ("PIDS", "pids")])  # fmt: skip
        if no_stream:
            return
        time.sleep(1)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.4g}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.4g}TiB"


@click.command()
@click.argument("container")
@pass_client
def diff(client: Client, container: str) -> None:
    """Show the paths a container changed (C changed, A added, D deleted).

    Example: dockyard diff web
    """
    rows = client.get(_c(container, "/changes"))
    for row in rows or []:  # type: ignore[union-attr]
        click.echo(f"{'CAD'[row['Kind']]} {row['Path']}")


@click.command()
@click.option("-o", "--output", default="-", help="Write to a file instead of stdout.")
@click.argument("container")
@pass_client
def export(client: Client, container: str, output: str) -> None:
    """Write a container's file system as a tar.

    Example: dockyard export -o web.tar web
    """
    response = client.request("GET", _c(container, "/export"))
    target = sys.stdout.buffer if output == "-" else open(output, "wb")  # noqa: SIM115
    try:
        while chunk := response.read(1 << 20):
            target.write(chunk)
    finally:
        if target is not sys.stdout.buffer:
            target.close()


@click.command()
@click.option("-a", "--author", default="", help="Author.")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("-c", "--change", "changes", multiple=True, help="Dockerfile instruction.")
@click.option("-p/--no-pause", "--pause", "pause_", default=True, help="Pause during commit.")
@click.argument("container")
@click.argument("reference", required=False)
@pass_client
def commit(client: Client, container: str, reference: str | None, author: str, message: str,
           changes: tuple[str, ...], pause_: bool) -> None:  # fmt: skip
    """Make an image of a container's changes.

    Example: dockyard commit -c 'CMD ["sh"]' web myimage:1
    """
    from cli.images import split_reference

    query: list[tuple[str, str]] = [("container", container), ("author", author),
                                    ("comment", message), ("pause", str(int(pause_)))]  # fmt: skip
    if reference:
        repo, tag = split_reference(reference)
        query += [("repo", repo), ("tag", tag)]
    query += [("changes", c) for c in changes]
    result = orjson.loads(client.request("POST", "/commit?" + urlencode(query)).read())
    click.echo(result["Id"])


@click.command()
@click.option("-a", "--archive", is_flag=True, help="Keep uid/gid.")
@click.argument("source")
@click.argument("destination")
@pass_client
def cp(client: Client, source: str, destination: str, archive: bool) -> None:
    """Copy files between a container and the host: CONTAINER:PATH DEST or SRC CONTAINER:PATH.

    Example: dockyard cp web:/etc/hostname .
    """
    if ":" in source and not source.startswith(("/", ".")):
        ref, path = source.split(":", 1)
        response = client.request("GET", _c(ref, "/archive?" + urlencode({"path": path})))
        data = io.BytesIO(response.read())
        if destination == "-":
            sys.stdout.buffer.write(data.getvalue())
            return
        dest = Path(destination)
        with tarfile.open(fileobj=data) as tar:
            members = tar.getmembers()
            top = members[0].name.split("/")[0] if members else ""
            if dest.is_dir():
                tar.extractall(dest, filter="tar")
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                for member in members:
                    member.name = str(Path(dest.name) / Path(member.name).relative_to(top))
                tar.extractall(dest.parent, members=members, filter="tar")
        return
    if ":" not in destination:
        raise InvalidArgument("cp: one of SOURCE and DESTINATION must be CONTAINER:PATH")
    ref, path = destination.split(":", 1)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        if source == "-":
            raise InvalidArgument("cp: copying a tar from stdin is not supported yet")
        src = Path(source)
        target_dir, name = path, src.name
        try:
            info = client.request("HEAD", _c(ref, "/archive?" + urlencode({"path": path})))
            info.read()
            is_dir = True
            header = info.getheader("X-Docker-Container-Path-Stat") or ""
            if header:
                import base64

                mode = orjson.loads(base64.b64decode(header)).get("mode", 0)
                is_dir = bool(mode & (1 << 31))
        except NotFound:
            is_dir = False
        if not is_dir:
            target_dir, name = os.path.dirname(path) or "/", os.path.basename(path)
        tar.add(src, arcname=name)
    buffer.seek(0)
    query = urlencode({"path": target_dir, "copyUIDGID": int(archive)})
    client.request("PUT", _c(ref, "/archive?" + query), data=buffer).read()


@click.command()
@click.argument("container")
@click.argument("name")
@pass_client
def rename(client: Client, container: str, name: str) -> None:
    """Rename a container.

    Example: dockyard rename web web2
    """
    _post(client, _c(container, "/rename"), name=name)


@click.command()
@click.option("-m", "--memory", default=None, help="Memory limit.")
@click.option("--memory-swap", default=None, help="Memory + swap limit.")
@click.option("--cpus", default=None, type=float, help="Number of CPUs.")
@click.option("-c", "--cpu-shares", default=None, type=int, help="CPU shares.")
@click.option("--pids-limit", default=None, type=int, help="Process limit.")
@click.option("--restart", default=None, help="Restart policy.")
@click.argument("containers", nargs=-1, required=True)
@pass_client
def update(client: Client, containers: tuple[str, ...], **options: Any) -> None:
    """Change the resources of containers.

    Example: dockyard update --memory 64m web
    """
    body = runflags.to_update_body(options)
    _each(containers, lambda ref: _post(client, _c(ref, "/update"), body))


COMMANDS = (run, create, start, stop, restart, kill, rm, pause, unpause, wait, ps, logs, attach,
            exec_, top, stats, diff, export, commit, cp, rename, update)  # fmt: skip
