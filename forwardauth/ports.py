"""One forwardauth server per port, and a clear "port in use" instead of a silent hang.

The workers share the port with ``SO_REUSEPORT``, which also lets any other process of the same
user that sets it join in: a second ``forwardauth serve`` would silently take half the traffic,
whatever its configuration. So the supervisor, before anything starts, (1) holds a lock named
after the port (an abstract Unix socket: released by the kernel when the process dies, however
it dies) that a second forwardauth cannot take, and (2) binds the address once without
``SO_REUSEPORT``, which fails while anything at all listens there.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import sys
from collections.abc import Iterator

# A worker's exit status when its port was taken meanwhile: the supervisor stops instead of
# restarting it forever.
PORT_TAKEN_EXIT = 3


class PortInUse(Exception):
    """The address cannot be listened on; the message says why and what to change."""


def _where(host: str, port: int) -> str:
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


def in_use_message(host: str, port: int) -> str:
    return (
        f"port {port} is already in use ({_where(host, port)}): stop what listens there or choose "
        "another port (FORWARDAUTH_PORT or --port)"
    )


def probe(host: str, port: int, variable: str = "FORWARDAUTH_HOST") -> None:
    """Bind every address ``host`` resolves to, as the workers will, then let go; ``PortInUse`` if one fails.

    ``SO_REUSEADDR`` (as the workers set it) keeps closed connections in TIME_WAIT from counting;
    a listening socket still refuses the bind, ``SO_REUSEPORT`` or not.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortInUse(f"{variable}: cannot resolve {host!r} ({exc.strerror})") from None
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise PortInUse(in_use_message(host, port)) from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise PortInUse(f"{variable}: {host} is not an address of this machine") from None
                raise PortInUse(f"cannot listen on {_where(host, port)}: {exc.strerror}") from None


@contextlib.contextmanager
def claim(host: str, port: int) -> Iterator[None]:
    """Hold the port for this server (see the module's docstring) until the block ends."""
    if port == 0:
        yield
        return
    lock: socket.socket | None = None
    if sys.platform.startswith("linux"):  # abstract socket names are Linux's
        lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            lock.bind(f"\0forwardauth-port-{port}")
        except OSError as exc:
            lock.close()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUse(
                    f"port {port} is already used by another forwardauth server on this machine: "
                    "stop it first, or choose another port (FORWARDAUTH_PORT or --port)"
                ) from None
            raise
    try:
        probe(host, port)
        yield
    finally:
        if lock is not None:
            lock.close()
