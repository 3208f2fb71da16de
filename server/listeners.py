"""Listener addresses for the API: ``unix:///path`` and ``tcp://host:port``, with TLS.

A unix socket is bound in a private directory, given its group and mode 0660 there, and only then
renamed into place, so it is never reachable with looser permissions (moby's listenUnix sets mode
and owner between bind and listen for the same reason). TCP without TLS is refused unless the
caller says it is insecure on purpose.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shutil
import socket
import ssl
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.errors import FailedPrecondition, InvalidArgument

SOCKET_MODE = 0o660


@dataclass(frozen=True, slots=True)
class Address:
    """One listener: ``proto`` is unix or tcp; ``path`` for unix, ``host``/``port`` for tcp."""

    proto: str
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.proto == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_address(text: str, *, tls: bool = False) -> Address:
    """Parse ``unix:///path`` or ``tcp://host[:port]``; InvalidArgument names the bad address."""
    if text.startswith("unix://"):
        path = text[len("unix://") :]
        if not path.startswith("/"):
            raise InvalidArgument(f"host: {text}: a unix socket path must be absolute")
        return Address("unix", path=path)
    if text.startswith("tcp://"):
        try:
            parts = urlsplit(text)
            port = parts.port or (2376 if tls else 2375)
        except ValueError as exc:
            raise InvalidArgument(f"host: {text}: {exc}") from None
        if not parts.hostname or parts.path not in ("", "/"):
            raise InvalidArgument(f"host: {text}: expected tcp://HOST:PORT")
        return Address("tcp", host=parts.hostname, port=port)
    raise InvalidArgument(f"host: {text}: expected unix:///path or tcp://host:port")


def group_id(group: str) -> int:
    """Return the gid of *group* (a name or a number); InvalidArgument if there is none."""
    if group.isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise InvalidArgument(f"group: no such group: {group}") from None


def unix_socket(path: Path, gid: int) -> tuple[socket.socket, int]:
    """Return a socket bound at *path* (mode 0660, group *gid*), not listening, and its inode."""
    _clear_stale(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    private = Path(tempfile.mkdtemp(prefix=".dockyard-sock-", dir=path.parent))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        staged = private / "s"
        sock.bind(str(staged))
        if os.stat(staged).st_gid != gid:
            os.chown(staged, -1, gid)
        os.chmod(staged, SOCKET_MODE)
        os.rename(staged, path)
        inode = path.lstat().st_ino
    except BaseException:
        sock.close()
        raise
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return sock, inode


def _clear_stale(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise FailedPrecondition(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink(missing_ok=True)  # nobody answers: a stale socket from a crashed daemon
    else:
        raise FailedPrecondition(f"another daemon is listening on unix://{path}")
    finally:
        probe.close()


def remove_socket(path: Path, inode: int) -> None:
    """Unlink *path* if it is still the socket file with *inode* (not a newer daemon's)."""
    with contextlib.suppress(OSError):
        if path.lstat().st_ino == inode:
            path.unlink()


def tls_context(cert: str, key: str, cacert: str = "", verify: bool = False) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with *verify*, client certificates must chain to *cacert*."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
        if verify:
            if not cacert:
                raise InvalidArgument("tlscacert: --tlsverify needs --tlscacert")
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(cafile=cacert)  # only this CA, never the system's
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"tls: cannot load certificates: {exc}") from None
    return context
