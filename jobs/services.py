"""The typed keys under which the daemon provides its services to jobs (``job.engine[KEY]``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from drivers.exec import ExecDriver
from drivers.graph import GraphDriver
from engine import Key
from graph.blobs import BlobStore
from graph.images import ImageStore
from graph.jobhistory import JobHistory
from graph.layers import LayerStore
from graph.volumes import VolumeStore
from jobs.eventlog import EventLog
from jobs.netcontroller import NetworkController
from jobs.runtime import Runtime
from registry.service import RegistryService


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """What the daemon knows of itself."""

    engine_id: str
    data_root: Path
    exec_root: Path
    hosts: tuple[str, ...] = ()
    debug: bool = False
    plugins: dict[str, list[str]] = field(default_factory=dict)
    plugin_failures: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    started: float = field(default_factory=time.time)


DAEMON: Final[Key[DaemonInfo]] = Key("daemon info", DaemonInfo)
HISTORY: Final[Key[JobHistory]] = Key("job history", JobHistory)
GRAPH_DRIVER: Final[Key[GraphDriver]] = Key("graph driver", GraphDriver)  # type: ignore[type-abstract]
LAYERS: Final[Key[LayerStore]] = Key("layer store", LayerStore)
IMAGES: Final[Key[ImageStore]] = Key("image store", ImageStore)
VOLUMES: Final[Key[VolumeStore]] = Key("volume store", VolumeStore)
RUNTIME: Final[Key[Runtime]] = Key("container runtime", Runtime)
EXEC_DRIVER: Final[Key[ExecDriver]] = Key("exec driver", ExecDriver)  # type: ignore[type-abstract]
EVENTS: Final[Key[EventLog]] = Key("event log", EventLog)
NETWORK: Final[Key[NetworkController]] = Key("network controller", NetworkController)
REGISTRY: Final[Key[RegistryService]] = Key("registry service", RegistryService)
BLOBS: Final[Key[BlobStore]] = Key("blob store", BlobStore)
