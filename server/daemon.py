"""Daemon bootstrap: lock the data root, open the stores, install jobs and plugins, serve.

Order: take ``<data-root>/dockyard.lock`` (a second daemon on the same data root is refused) →
choose the graph driver → open ``graph.db`` → remove half-made layers → register the built-in
jobs → load plugins → run ``serveapi`` → write the pid file once every listener is up → wait for
SIGINT/SIGTERM → ``engine.shutdown`` (drain jobs, stop listening, remove sockets) → flush the job
history → release the graph driver, remove the pid file and release the lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import secrets
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import jobs
from drivers.exec import select as select_exec
from drivers.graph import select
from drivers.network import BUILTINS as NETWORK_DRIVERS
from drivers.network import chosen as default_network
from drivers.network.base import Settings
from engine import Engine
from engine.errors import FailedPrecondition
from engine.plugins import load_plugins
from graph.blobs import BlobStore
from graph.containers import ContainerStore
from graph.db import GraphDB
from graph.images import ImageStore
from graph.jobhistory import JobHistory
from graph.layers import LayerStore
from graph.networks import NetworkStore
from graph.volumes import VolumeStore
from jobs.containers import remove_volumes, start_container
from jobs.eventlog import EventLog
from jobs.netcontroller import NetworkController
from jobs.runtime import Runtime, now_rfc3339
from jobs.services import (
    BLOBS,
    DAEMON,
    EVENTS,
    EXEC_DRIVER,
    GRAPH_DRIVER,
    HISTORY,
    IMAGES,
    LAYERS,
    NETWORK,
    REGISTRY,
    RUNTIME,
    VOLUMES,
    DaemonInfo,
)
from registry.service import RegistryService
from server import serveapi
from server.serveapi import INSECURE_TCP

log = logging.getLogger("daemon")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Everything ``dockyard daemon`` was started with."""

    hosts: tuple[str, ...]
    data_root: Path
    exec_root: Path
    storage_driver: str = ""
    exec_driver: str = ""
    cgroup_parent: str = ""
    plugins: tuple[str, ...] = ()
    group: str = "root"
    tlscert: str = ""
    tlskey: str = ""
    tlscacert: str = ""
    tlsverify: bool = False
    insecure_tcp: bool = False
    debug: bool = False
    shutdown_timeout: float = 15.0
    network: Settings = field(default_factory=Settings)
    network_driver: str = ""  # the default network's driver (bridge, host or none)
    registry: RegistryService = field(default_factory=RegistryService)


@contextlib.contextmanager
def data_root_lock(data_root: Path) -> Iterator[None]:
    """Hold the data root's lock file; FailedPrecondition if another daemon holds it."""
    path = data_root / "dockyard.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FailedPrecondition(
                f"another dockyard daemon (pid {holder}) is using the data root {data_root}; "
                "stop it first, or give this one its own --data-root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _engine_id(data_root: Path) -> str:
    path = data_root / "engine-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = ":".join(secrets.token_hex(2).upper() for _ in range(12))
        _write_atomic(path, value + "\n")
        return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def event_loop() -> asyncio.AbstractEventLoop:
    """The daemon's event loop: uvloop's where it is installed (a quarter more requests a second
    through the API), asyncio's own otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def run(config: DaemonConfig) -> None:
    """Run the daemon until SIGINT or SIGTERM; raise EngineError if it cannot start."""
    config.data_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    config.exec_root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with data_root_lock(config.data_root):
        execdriver = select_exec(config.exec_root, os.environ, name=config.exec_driver)
        tmp = config.data_root / "tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # what a killed daemon left half-written
        tmp.mkdir(mode=0o700)
        driver = select(config.data_root, (), os.environ, name=config.storage_driver)
        db = GraphDB(config.data_root / "graph.db")
        history = JobHistory(db)
        engine = Engine(recorder=history)
        try:
            layers = LayerStore(db, driver, config.data_root / "layertars")
            await asyncio.to_thread(layers.recover)
            engine.provide(HISTORY, history)
            engine.provide(GRAPH_DRIVER, driver)
            engine.provide(LAYERS, layers)
            images = ImageStore(db)
            engine.provide(IMAGES, images)
            blobs = BlobStore(db, config.data_root / "blobs")
            await asyncio.to_thread(_prune_blobs, blobs, layers)
            engine.provide(BLOBS, blobs)
            engine.provide(REGISTRY, config.registry)
            volumes = VolumeStore(db, config.data_root / "volumes")
            await asyncio.to_thread(volumes.recover)
            engine.provide(VOLUMES, volumes)
            await execdriver.setup()
            events = EventLog()
            engine.provide(EVENTS, events)
            runtime = Runtime(
                ContainerStore(db, config.data_root / "containers"),
                driver, execdriver, config.exec_root, events,
            )  # fmt: skip
            runtime.cgroup_parent = config.cgroup_parent
            runtime.starter = functools.partial(start_container, runtime)
            runtime.on_remove_volumes = functools.partial(remove_volumes, volumes)
            engine.provide(RUNTIME, runtime)
            engine.provide(EXEC_DRIVER, execdriver)
            network = await _network(config, db, runtime)
            engine.provide(NETWORK, network)
            try:
                await runtime.restore()
                await _serve(config, engine)
            finally:
                await runtime.shutdown()
                await network.shutdown()
                await execdriver.shutdown()
        finally:
            history.close()
            db.close()
            driver.cleanup()


def _prune_blobs(blobs: BlobStore, layers: LayerStore) -> None:
    """Drop cached blobs and registry hints of layers that are gone (after a crash or rmi)."""
    removed = blobs.prune({layer.diff_id for layer in layers.all()})
    if removed:
        log.info("removed %d cached blob(s) of deleted layers", removed)


async def _network(config: DaemonConfig, db: GraphDB, runtime: Runtime) -> NetworkController:
    """The network controller with every built-in driver, set up (bridges, rules)."""
    default = default_network(config.network_driver, os.environ)
    drivers = {name: factory(config.network) for name, factory in NETWORK_DRIVERS.items()}
    engine_id = _engine_id(config.data_root)
    network = NetworkController(NetworkStore(db), drivers, config.network, default, engine_id)
    network.runtime = runtime
    runtime.network = network
    created = now_rfc3339((config.data_root / "engine-id").stat().st_mtime)
    try:
        await network.setup(created)
    except BaseException:
        await network.shutdown()
        raise
    return network


async def _serve(config: DaemonConfig, engine: Engine) -> None:
    jobs.install(engine)
    serveapi.install(engine)
    report = load_plugins(engine, config.plugins)
    insecure = [h for h in config.hosts if h.startswith("tcp://") and not config.tlscert]
    engine.provide(
        DAEMON,
        DaemonInfo(
            engine_id=_engine_id(config.data_root),
            data_root=config.data_root,
            exec_root=config.exec_root,
            hosts=config.hosts,
            debug=config.debug,
            plugins=report.loaded,
            plugin_failures=report.failed,
            warnings=tuple(INSECURE_TCP.format(address=h) for h in insecure),
        ),
    )
    serve = engine.job(
        "serveapi",
        *config.hosts,
        group=config.group,
        tlscert=config.tlscert,
        tlskey=config.tlskey,
        tlscacert=config.tlscacert,
        tlsverify=config.tlsverify,
        insecure_tcp=config.insecure_tcp,
    )
    ready = asyncio.Event()
    serve.stdout.attach(lambda _: ready.set() if serve.stdout.count == len(config.hosts) else None)
    serving = asyncio.ensure_future(serve.run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal, signum, stop)
    pidfile = config.exec_root / "dockyard.pid"
    try:
        await asyncio.wait(
            [serving, asyncio.ensure_future(ready.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        if serving.done():
            serving.result()  # a listener failed to start: raise its error
            return
        _write_atomic(pidfile, f"{os.getpid()}\n")
        log.info("daemon ready (pid %d, data root %s)", os.getpid(), config.data_root)
        await asyncio.wait(
            [serving, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        log.info("shutting down")
        await engine.shutdown(config.shutdown_timeout)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await serving
        pidfile.unlink(missing_ok=True)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if serving.done() and not serving.cancelled() and serving.exception():
        raise serving.exception()  # type: ignore[misc]


def _on_signal(signum: int, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.warning("shutdown already in progress (send SIGKILL to force)")
    else:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()
