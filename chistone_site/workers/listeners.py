"""The listening sockets the supervisor opens once and hands down to its workers.

Two ways to share an address among N workers:

- `reuseport` (the default where the OS has it): one `SO_REUSEPORT` socket per worker slot,
  all bound to the same address. The kernel hashes each new connection onto one of them, so
  connections spread evenly even when a client opens a burst of keep-alive connections at
  once (on one shared socket, whichever worker wakes first takes the whole burst). A slot's
  socket belongs to the supervisor and outlives the worker serving it: a replacement worker
  inherits it, and connections that arrive in between wait in its backlog instead of being
  refused.
- `shared`: one socket that every worker accepts from. A worker that is gone leaves no
  backlog behind, but bursts spread badly.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

MODES = ("reuseport", "shared")
BACKLOG = 1024


def default_mode() -> str:
    return "reuseport" if hasattr(socket, "SO_REUSEPORT") else "shared"


@dataclass(frozen=True)
class Listener:
    """One address served by every worker; `sockets` has one entry per slot, or one shared."""

    host: str
    port: int
    sockets: tuple[socket.socket, ...]

    def for_slot(self, index: int) -> socket.socket:
        return self.sockets[index % len(self.sockets)]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def _new_socket(host: str, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _claim(host: str, port: int) -> int:
    """Bind without SO_REUSEPORT first, so an address that another `serve` (or anything else)
    already listens on fails with "address in use" instead of silently joining its group and
    splitting its traffic. Returns the port (resolved when 0 was asked for)."""
    probe = _new_socket(host, reuse_port=False)
    try:
        probe.bind((host, port))
        return probe.getsockname()[1]
    finally:
        probe.close()


def open_listener(host: str, port: int, *, slots: int, mode: str) -> Listener:
    """Open the socket(s) for one address; raises OSError (e.g. EADDRINUSE) as bind does."""
    if mode not in MODES:
        raise ValueError(f"unknown listener mode {mode!r}; expected one of {MODES}")
    host = host.strip("[]")
    reuse_port = mode == "reuseport" and slots > 1
    if reuse_port and not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available on this system")
    if reuse_port:
        port = _claim(host, port)
    sockets: list[socket.socket] = []
    try:
        for _ in range(slots if reuse_port else 1):
            sock = _new_socket(host, reuse_port=reuse_port)
            sockets.append(sock)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.set_inheritable(True)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return Listener(host=host, port=port, sockets=tuple(sockets))
